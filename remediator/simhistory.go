package remediator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// historyQuery asks, at every step, for the time of the latest firing
// sample of each alert: the first step of a period gives the evaluation at
// which the alert fired, to the millisecond, whatever the step's phase.
const historyQuery = `timestamp(ALERTS{alertstate="firing"})`

// historyChunkSteps bounds the points of one series in one range query
// (Prometheus refuses more than 11,000), and with it the size of an answer.
const historyChunkSteps = 2000

// HistoryPoint is one step of a range query of historyQuery: at At, the
// latest firing sample of the series was taken at Sample.
type HistoryPoint struct {
	At, Sample time.Time
}

// QueryAlertHistory reads the firing periods of every alert between from
// and to from Prometheus's ALERTS series, with range queries whose step is
// the rule evaluation interval.
func QueryAlertHistory(ctx context.Context, client *http.Client, baseURL string, from, to time.Time, step time.Duration) ([]FiringPeriod, error) {
	series, err := queryAlertPoints(ctx, client, baseURL, from, to, step)
	if err != nil {
		return nil, err
	}
	return PeriodsFromPoints(series, to, step), nil
}

// queryAlertPoints runs historyQuery over [from, to] in chunks and returns
// the points of each alert, by label set (alertstate dropped).
func queryAlertPoints(ctx context.Context, client *http.Client, baseURL string, from, to time.Time, step time.Duration) (map[string]*alertPoints, error) {
	if step <= 0 {
		return nil, errors.New("query step must be positive")
	}
	if !to.After(from) {
		return nil, errors.New("the end of the range must be after its start")
	}
	out := map[string]*alertPoints{}
	chunk := step * historyChunkSteps
	for start := from; !start.After(to); start = start.Add(chunk) {
		end := start.Add(chunk - step)
		if end.After(to) {
			end = to
		}
		q := url.Values{}
		q.Set("query", historyQuery)
		q.Set("start", formatPromTime(start))
		q.Set("end", formatPromTime(end))
		q.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
		var resp promResponse
		if err := getJSON(ctx, client, strings.TrimRight(baseURL, "/")+"/api/v1/query_range?"+q.Encode(), &resp); err != nil {
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		if resp.Status != "success" {
			return nil, fmt.Errorf("prometheus: query %s failed: %s", historyQuery, resp.Error)
		}
		for _, r := range resp.Data.Result {
			delete(r.Metric, "__name__")
			delete(r.Metric, "alertstate")
			k := labelsKey(r.Metric)
			ap, ok := out[k]
			if !ok {
				ap = &alertPoints{labels: r.Metric}
				out[k] = ap
			}
			for _, v := range r.Values {
				at, err1 := promTime(v[0])
				sample, err2 := promTime(v[1])
				if err := errors.Join(err1, err2); err != nil {
					return nil, fmt.Errorf("prometheus: query %s: %w", historyQuery, err)
				}
				ap.points = append(ap.points, HistoryPoint{At: at, Sample: sample})
			}
		}
	}
	return out, nil
}

type alertPoints struct {
	labels map[string]string
	points []HistoryPoint
}

func formatPromTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// promTime reads a time from a query answer: a number (a point's time) or
// a string (a sample value).
func promTime(v any) (time.Time, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case string:
		var err error
		if f, err = strconv.ParseFloat(x, 64); err != nil {
			return time.Time{}, fmt.Errorf("bad sample value %q", x)
		}
	default:
		return time.Time{}, fmt.Errorf("bad time %v", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, fmt.Errorf("bad time %v", v)
	}
	return time.UnixMilli(int64(math.Round(f * 1000))).UTC(), nil
}

// PeriodsFromPoints turns the points of each alert into firing periods. A
// point is fresh when its sample is less than two steps old (one missed
// evaluation does not end a period; backfilled data, which has no
// staleness markers, ends when the samples do). A period starts at the
// sample of its first fresh point and ends one step after the sample of
// its last; one still fresh at the last step before to has no end.
func PeriodsFromPoints(series map[string]*alertPoints, to time.Time, step time.Duration) []FiringPeriod {
	var out []FiringPeriod
	for _, ap := range series {
		pts := ap.points
		sort.Slice(pts, func(i, j int) bool { return pts[i].At.Before(pts[j].At) })
		var cur *FiringPeriod
		var lastAt, lastSample time.Time
		closeCur := func() {
			if cur != nil {
				cur.End = lastSample.Add(step)
				out = append(out, *cur)
				cur = nil
			}
		}
		for _, pt := range pts {
			if pt.At.Sub(pt.Sample) >= 2*step {
				closeCur()
				continue
			}
			if cur != nil && (pt.At.Sub(lastAt) > step+step/2 || pt.Sample.Sub(lastSample) > 2*step) {
				closeCur()
			}
			if cur == nil {
				cur = &FiringPeriod{Labels: ap.labels, Start: pt.Sample}
			}
			lastAt, lastSample = pt.At, pt.Sample
		}
		if cur != nil && to.Sub(lastAt) < step {
			out = append(out, *cur) // still firing at the end
			cur = nil
		}
		closeCur()
	}
	sortPeriods(out)
	return out
}

func sortPeriods(ps []FiringPeriod) {
	sort.SliceStable(ps, func(i, j int) bool {
		if !ps[i].Start.Equal(ps[j].Start) {
			return ps[i].Start.Before(ps[j].Start)
		}
		return labelsKey(ps[i].Labels) < labelsKey(ps[j].Labels)
	})
}

// EvaluationInterval reads global.evaluation_interval from Prometheus's
// configuration (/api/v1/status/config); Prometheus's default (1m) when it
// is not set.
func EvaluationInterval(ctx context.Context, client *http.Client, baseURL string) (time.Duration, error) {
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			YAML string `json:"yaml"`
		} `json:"data"`
	}
	if err := getJSON(ctx, client, strings.TrimRight(baseURL, "/")+"/api/v1/status/config", &resp); err != nil {
		return 0, fmt.Errorf("prometheus: %w", err)
	}
	if resp.Status != "success" {
		return 0, fmt.Errorf("prometheus: read configuration: %s", resp.Error)
	}
	var cfg struct {
		Global struct {
			EvaluationInterval string `yaml:"evaluation_interval"`
		} `yaml:"global"`
	}
	if err := yaml.Unmarshal([]byte(resp.Data.YAML), &cfg); err != nil {
		return 0, fmt.Errorf("prometheus: configuration: %w", err)
	}
	if cfg.Global.EvaluationInterval == "" {
		return time.Minute, nil
	}
	d, err := model.ParseDuration(cfg.Global.EvaluationInterval)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("prometheus: global.evaluation_interval %q: not a positive duration", cfg.Global.EvaluationInterval)
	}
	return time.Duration(d), nil
}

// DeliveryModel is how Alertmanager would have delivered the firing
// periods: the first notification group_wait after the alert fired, again
// every repeat_interval while it fires, and a resolved notification when
// it stops.
type DeliveryModel struct {
	GroupWait      time.Duration
	RepeatInterval time.Duration
}

// NotificationsFromPeriods turns firing periods into the deliveries
// Alertmanager would have made between from and to. An alert already
// firing at from is delivered at from. The fingerprint is Alertmanager's,
// of the alert's labels.
func NotificationsFromPeriods(periods []FiringPeriod, from, to time.Time, m DeliveryModel) []Notification {
	var out []Notification
	for _, p := range periods {
		kv := amtemplate.KV{}
		ls := make(model.LabelSet, len(p.Labels))
		for k, v := range p.Labels {
			kv[k] = v
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
		a := amtemplate.Alert{Status: "firing", Labels: kv, Annotations: amtemplate.KV{}, StartsAt: p.Start, Fingerprint: ls.Fingerprint().String()}
		first := p.Start.Add(m.GroupWait)
		if first.Before(from) {
			first = from
		}
		delivered := false
		for t := first; !t.After(to) && (p.End.IsZero() || t.Before(p.End)); t = t.Add(m.RepeatInterval) {
			out = append(out, Notification{Received: t, Alert: a})
			delivered = true
			if m.RepeatInterval <= 0 {
				break
			}
		}
		if delivered && !p.End.IsZero() && !p.End.After(to) {
			r := a
			r.Status, r.EndsAt = "resolved", p.End
			out = append(out, Notification{Received: p.End, Alert: r})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) })
	return out
}

// ReadNotifications reads saved webhook bodies: a JSON array of them, or
// one per line (JSON lines). Each is an Alertmanager webhook payload
// (version 4) with one more top-level field, receivedAt (RFC 3339), the
// time the remediator received it.
func ReadNotifications(r io.Reader) ([]Notification, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	type record struct {
		where string
		raw   []byte
	}
	var records []record
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(t, &arr); err != nil {
			return nil, fmt.Errorf("JSON array: %w", err)
		}
		for i, raw := range arr {
			records = append(records, record{fmt.Sprintf("element %d", i), raw})
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
		for n := 1; sc.Scan(); n++ {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			records = append(records, record{fmt.Sprintf("line %d", n), bytes.Clone(line)})
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	var out []Notification
	for _, rec := range records {
		var meta struct {
			ReceivedAt *time.Time `json:"receivedAt"`
		}
		if err := json.Unmarshal(rec.raw, &meta); err != nil {
			return nil, fmt.Errorf("%s: %w", rec.where, err)
		}
		if meta.ReceivedAt == nil || meta.ReceivedAt.IsZero() {
			return nil, fmt.Errorf("%s: receivedAt: required (RFC 3339 time the payload was received)", rec.where)
		}
		msg, err := DecodeWebhook(rec.raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rec.where, err)
		}
		for _, a := range msg.Alerts {
			out = append(out, Notification{Received: *meta.ReceivedAt, Alert: a})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no webhook payloads")
	}
	return out, nil
}

// PeriodsFromNotifications derives firing periods from deliveries: an
// occurrence (fingerprint and startsAt) fires from its startsAt until its
// resolved notification's endsAt (or receipt), or to the end of the
// history when none came.
func PeriodsFromNotifications(ns []Notification) []FiringPeriod {
	byOcc := map[string]*FiringPeriod{}
	var order []string
	for _, n := range ns {
		a := n.Alert
		k := alertOccurrence(a.Fingerprint, a.StartsAt)
		p, ok := byOcc[k]
		if !ok {
			p = &FiringPeriod{Labels: map[string]string(a.Labels), Start: a.StartsAt}
			byOcc[k] = p
			order = append(order, k)
		}
		if a.Status == "resolved" {
			end := a.EndsAt
			if end.IsZero() || !end.After(a.StartsAt) {
				end = n.Received
			}
			if p.End.IsZero() || end.Before(p.End) {
				p.End = end
			}
		}
	}
	out := make([]FiringPeriod, 0, len(order))
	for _, k := range order {
		out = append(out, *byOcc[k])
	}
	sortPeriods(out)
	return out
}
