package remediator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	amtemplate "github.com/prometheus/alertmanager/template"
)

// AlertReader tells which alerts fire now. The stale check, the block_when
// gate and verification ask it; Alertmanager's API v2 and Prometheus's
// ALERTS series both answer.
type AlertReader interface {
	// Firing returns the label sets of the alerts that fire now and match
	// every matcher in ms.
	Firing(ctx context.Context, ms labels.Matchers) ([]map[string]string, error)
	// String names the source in log lines and audit details.
	String() string
}

// alertReadTimeout bounds one query, so a hung Alertmanager or Prometheus
// cannot hold a worker.
const alertReadTimeout = 10 * time.Second

// maxAlertResponseBytes caps what is read from one answer.
const maxAlertResponseBytes = 16 << 20

// AlertmanagerReader reads firing alerts from Alertmanager's API v2.
type AlertmanagerReader struct {
	URL    string // base URL, e.g. http://alertmanager:9093
	Client *http.Client
}

func (r *AlertmanagerReader) String() string { return "alertmanager" }

// Firing asks GET /api/v2/alerts for active alerts, silenced and inhibited
// ones included: a silence mutes a notification, it does not end the
// condition.
func (r *AlertmanagerReader) Firing(ctx context.Context, ms labels.Matchers) ([]map[string]string, error) {
	q := url.Values{}
	q.Set("active", "true")
	q.Set("silenced", "true")
	q.Set("inhibited", "true")
	q.Set("unprocessed", "true")
	for _, m := range ms {
		q.Add("filter", m.String())
	}
	var alerts []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := getJSON(ctx, r.Client, strings.TrimRight(r.URL, "/")+"/api/v2/alerts?"+q.Encode(), &alerts); err != nil {
		return nil, fmt.Errorf("alertmanager: %w", err)
	}
	var out []map[string]string
	for _, a := range alerts {
		// The filter is applied by Alertmanager; matching again keeps an
		// older server that ignores a matcher from widening the answer.
		if matchesAll(ms, a.Labels) {
			out = append(out, a.Labels)
		}
	}
	return out, nil
}

// PrometheusReader reads firing alerts from Prometheus's ALERTS series.
type PrometheusReader struct {
	URL    string // base URL, e.g. http://prometheus:9090
	Client *http.Client
}

func (r *PrometheusReader) String() string { return "prometheus" }

// Firing queries ALERTS{alertstate="firing", <ms>}. The series carry the
// rule's labels without Prometheus's external labels.
func (r *PrometheusReader) Firing(ctx context.Context, ms labels.Matchers) ([]map[string]string, error) {
	sel := []string{`alertstate="firing"`}
	for _, m := range ms {
		sel = append(sel, m.String())
	}
	q := url.Values{}
	q.Set("query", "ALERTS{"+strings.Join(sel, ",")+"}")
	var resp promResponse
	if err := getJSON(ctx, r.Client, strings.TrimRight(r.URL, "/")+"/api/v1/query?"+q.Encode(), &resp); err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("prometheus: query failed: %s", resp.Error)
	}
	out := make([]map[string]string, 0, len(resp.Data.Result))
	for _, s := range resp.Data.Result {
		delete(s.Metric, "__name__")
		delete(s.Metric, "alertstate")
		out = append(out, s.Metric)
	}
	return out, nil
}

// promResponse is the answer of Prometheus's query and query_range APIs;
// Values is set only by query_range.
type promResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func getJSON(ctx context.Context, client *http.Client, u string, into any) error {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, alertReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAlertResponseBytes))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	// Prometheus answers a bad query with 400 and a JSON error body.
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusBadRequest {
		return fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: %s: decode: %w", req.URL.Path, resp.Status, err)
	}
	return nil
}

func matchesAll(ms labels.Matchers, lset map[string]string) bool {
	for _, m := range ms {
		if !m.Matches(lset[m.Name]) {
			return false
		}
	}
	return true
}

// sameAlert reports whether a firing alert's labels identify the alert a:
// every label of the firing alert has the same value on a. The webhook's
// alert may carry more (Prometheus's external labels, which ALERTS lacks).
func sameAlert(firing map[string]string, a amtemplate.KV) bool {
	if len(firing) == 0 {
		return false
	}
	for k, v := range firing {
		if a[k] != v {
			return false
		}
	}
	return true
}

// alertFiring reports whether the alert a fires now according to rd.
func alertFiring(ctx context.Context, rd AlertReader, a amtemplate.KV) (bool, error) {
	m, err := labels.NewMatcher(labels.MatchEqual, "alertname", a["alertname"])
	if err != nil {
		return false, err
	}
	firing, err := rd.Firing(ctx, labels.Matchers{m})
	if err != nil {
		return false, err
	}
	for _, f := range firing {
		if sameAlert(f, a) {
			return true, nil
		}
	}
	return false, nil
}

var errNoAlertSource = errors.New("no alert source configured (--alertmanager.url or --prometheus.url)")

// gateReader is where the stale check and block_when read alerts:
// Alertmanager, which sees every Prometheus, else Prometheus.
func (r *Remediator) gateReader() AlertReader {
	if r.alertmanager != nil {
		return r.alertmanager
	}
	return r.prometheus
}

// staleness returns why a firing alert's job is too old to act on, or ""
// when it is fresh or confirmed to be still firing. A job that waited in
// the queue longer than defaults.max_delay may describe a condition that
// has since ended; the next Alertmanager repeat of a still-firing alert is
// handled normally.
func (r *Remediator) staleness(ctx context.Context, p *Policy, j job) string {
	waited := r.now().Sub(j.received)
	if j.alert.Status != "firing" || p.Defaults.MaxDelay <= 0 || waited <= p.Defaults.MaxDelay {
		return ""
	}
	rd := r.gateReader()
	if rd == nil {
		return fmt.Sprintf("waited %s (max_delay %s) and cannot confirm it still fires: %v", waited.Round(time.Second), p.Defaults.MaxDelay, errNoAlertSource)
	}
	firing, err := alertFiring(ctx, rd, j.alert.Labels)
	switch {
	case err != nil:
		return fmt.Sprintf("waited %s (max_delay %s) and cannot confirm it still fires: %v", waited.Round(time.Second), p.Defaults.MaxDelay, err)
	case !firing:
		return fmt.Sprintf("waited %s (max_delay %s) and %s no longer reports it firing", waited.Round(time.Second), p.Defaults.MaxDelay, rd)
	}
	return ""
}
