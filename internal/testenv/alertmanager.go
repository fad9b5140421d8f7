package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const alertmanagerInstall = "scripts/tools.sh alertmanager, then eval \"$(scripts/tools.sh env)\" (sets ALERTMANAGER)"

// WebhookRoute is an Alertmanager configuration with one route to one
// webhook receiver, with fast-loop timings by default.
type WebhookRoute struct {
	URL string
	// CredentialsFile holds a bearer token sent as Authorization.
	CredentialsFile string
	GroupBy         []string      // default: alertname and every label ("...")
	GroupWait       time.Duration // default 0s
	GroupInterval   time.Duration // default 1s
	RepeatInterval  time.Duration // default 1h
	SendResolved    bool
}

// YAML renders the route as an Alertmanager configuration file.
func (w WebhookRoute) YAML() ([]byte, error) {
	if w.URL == "" {
		return nil, fmt.Errorf("webhook url: required")
	}
	groupInterval, repeat := w.GroupInterval, w.RepeatInterval
	if groupInterval <= 0 {
		groupInterval = time.Second
	}
	if repeat <= 0 {
		repeat = time.Hour
	}
	groupBy := w.GroupBy
	if len(groupBy) == 0 {
		groupBy = []string{"..."}
	}
	type authorization struct {
		CredentialsFile string `yaml:"credentials_file"`
	}
	type httpConfig struct {
		Authorization *authorization `yaml:"authorization,omitempty"`
	}
	type webhook struct {
		URL          string      `yaml:"url"`
		SendResolved bool        `yaml:"send_resolved"`
		HTTPConfig   *httpConfig `yaml:"http_config,omitempty"`
	}
	hook := webhook{URL: w.URL, SendResolved: w.SendResolved}
	if w.CredentialsFile != "" {
		hook.HTTPConfig = &httpConfig{Authorization: &authorization{CredentialsFile: w.CredentialsFile}}
	}
	doc := map[string]any{
		"route": map[string]any{
			"receiver":        "webhook",
			"group_by":        groupBy,
			"group_wait":      promDuration(w.GroupWait),
			"group_interval":  promDuration(groupInterval),
			"repeat_interval": promDuration(repeat),
		},
		"receivers": []any{map[string]any{"name": "webhook", "webhook_configs": []webhook{hook}}},
	}
	return yaml.Marshal(doc)
}

// promDuration writes a duration the way Prometheus configs accept it
// (no fractional units such as 1.5s; milliseconds instead).
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// Alertmanager is a throw-away single-node Alertmanager (no gossip) on a
// loopback port.
type Alertmanager struct {
	// URL is the server's base URL; Addr is host:port for Prometheus's
	// alerting configuration.
	URL  string
	Addr string
	dir  string
	proc *Process
}

// NewAlertmanager starts Alertmanager with the given configuration file
// contents (see WebhookRoute.YAML). Stop it with Stop.
func NewAlertmanager(ctx context.Context, config []byte) (*Alertmanager, error) {
	bin, err := LookBinary("alertmanager", "ALERTMANAGER", alertmanagerInstall)
	if err != nil {
		return nil, err
	}
	// No gossip: a single node.
	s, err := startWebServer(ctx, "alertmanager", bin, config, "--storage.path", "--cluster.listen-address=")
	if err != nil {
		return nil, err
	}
	return &Alertmanager{URL: s.URL, Addr: s.Addr, dir: s.dir, proc: s.proc}, nil
}

// StartAlertmanager starts Alertmanager for one test and removes it
// afterwards; it skips the test under -short.
func StartAlertmanager(t testing.TB, config []byte) *Alertmanager {
	t.Helper()
	skipUnderShort(t)
	a, err := NewAlertmanager(context.Background(), config)
	if err != nil {
		t.Fatalf("start alertmanager: %v", err)
	}
	t.Cleanup(a.Stop)
	return a
}

// LogPath is the server's log file, for failure messages.
func (a *Alertmanager) LogPath() string { return filepath.Join(a.dir, "alertmanager.log") }

// Stop ends the server and removes its directory.
func (a *Alertmanager) Stop() {
	if a.proc != nil {
		a.proc.Stop(syscall.SIGTERM, 5*time.Second)
	}
	os.RemoveAll(a.dir)
}

// AlertmanagerAlert is one alert as /api/v2/alerts reports it.
type AlertmanagerAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Fingerprint string            `json:"fingerprint"`
	Status      struct {
		State string `json:"state"` // active, suppressed, unprocessed
	} `json:"status"`
}

// Name is the alertname label.
func (a AlertmanagerAlert) Name() string { return a.Labels["alertname"] }

// Alerts returns the alerts Alertmanager holds that have not resolved.
func (a *Alertmanager) Alerts(ctx context.Context) ([]AlertmanagerAlert, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/api/v2/alerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("alertmanager alerts: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var out []AlertmanagerAlert
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("alertmanager alerts: decode: %w", err)
	}
	now := time.Now()
	active := out[:0]
	for _, al := range out {
		if al.EndsAt.IsZero() || al.EndsAt.After(now) {
			active = append(active, al)
		}
	}
	return active, nil
}

// PostAlert sends an alert straight to Alertmanager, as Prometheus would.
// A zero endsAt leaves it firing.
func (a *Alertmanager) PostAlert(ctx context.Context, labels, annotations map[string]string, startsAt, endsAt time.Time) error {
	al := map[string]any{"labels": labels, "annotations": annotations, "startsAt": startsAt.UTC().Format(time.RFC3339Nano)}
	if !endsAt.IsZero() {
		al["endsAt"] = endsAt.UTC().Format(time.RFC3339Nano)
	}
	body, err := json.Marshal([]any{al})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("post alert: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("post alert: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// findAMAlert returns the first alert named name whose labels include
// match.
func findAMAlert(alerts []AlertmanagerAlert, name string, match map[string]string) (AlertmanagerAlert, bool) {
	for _, al := range alerts {
		if al.Name() == name && labelsMatch(al.Labels, match) {
			return al, true
		}
	}
	return AlertmanagerAlert{}, false
}

// WaitForAlert polls until an unresolved alert named name whose labels
// include match is present, and returns it.
func (a *Alertmanager) WaitForAlert(ctx context.Context, name string, match map[string]string) (AlertmanagerAlert, error) {
	var found AlertmanagerAlert
	var last []AlertmanagerAlert
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		alerts, err := a.Alerts(ctx)
		if err != nil {
			return false, nil
		}
		last = alerts
		var ok bool
		found, ok = findAMAlert(alerts, name, match)
		return ok, nil
	})
	if err != nil {
		return AlertmanagerAlert{}, fmt.Errorf("alertmanager: alert %s%v not active: %w (active: %s)", name, match, err, describeAMAlerts(last))
	}
	return found, nil
}

// WaitForResolved polls until no unresolved alert named name whose labels
// include match remains.
func (a *Alertmanager) WaitForResolved(ctx context.Context, name string, match map[string]string) error {
	var last []AlertmanagerAlert
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		alerts, err := a.Alerts(ctx)
		if err != nil {
			return false, nil
		}
		last = alerts
		_, ok := findAMAlert(alerts, name, match)
		return !ok, nil
	})
	if err != nil {
		return fmt.Errorf("alertmanager: alert %s%v not resolved: %w (active: %s)", name, match, err, describeAMAlerts(last))
	}
	return nil
}

func describeAMAlerts(alerts []AlertmanagerAlert) string {
	if len(alerts) == 0 {
		return "none"
	}
	names := make([]string, 0, len(alerts))
	for _, a := range alerts {
		names = append(names, a.Name())
	}
	return strings.Join(names, ", ")
}
