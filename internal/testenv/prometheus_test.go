package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAlertLoopFromScrapeToWebhook drives the whole fast loop: a target's
// gauge flips, Prometheus fires the rule, Alertmanager delivers it to a
// webhook with the bearer token, and the alert resolves when the gauge flips
// back.
func TestAlertLoopFromScrapeToWebhook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var broken atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE demo_broken gauge\ndemo_broken %d\n", broken.Load())
	}))
	defer target.Close()

	type delivery struct {
		auth   string
		status string
		alerts []struct {
			Status string            `json:"status"`
			Labels map[string]string `json:"labels"`
		}
	}
	var mu sync.Mutex
	var deliveries []delivery
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p struct {
			Status string `json:"status"`
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		deliveries = append(deliveries, delivery{auth: r.Header.Get("Authorization"), status: p.Status, alerts: p.Alerts})
		mu.Unlock()
	}))
	defer hook.Close()

	dir := t.TempDir()
	rules := WriteFile(t, dir, "demo.rules.yml", `groups:
- name: demo
  rules:
  - alert: DemoBroken
    expr: demo_broken == 1
    labels: {severity: warning}
    annotations: {summary: demo is broken}
`)
	token := WriteFile(t, dir, "token", "s3cret\n")

	amConfig, err := WebhookRoute{URL: hook.URL, CredentialsFile: token, SendResolved: true}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	am := StartAlertmanager(t, amConfig)
	prom := StartPrometheus(t, PrometheusConfig{
		Jobs:          []ScrapeJob{{Name: "demo", Targets: []string{strings.TrimPrefix(target.URL, "http://")}, Labels: map[string]string{"namespace": "test"}}},
		RuleFiles:     []string{rules},
		Alertmanagers: []string{am.Addr},
	})

	groups, err := prom.RuleGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if groups["demo"] != 1 {
		t.Fatalf("rule groups = %v, want demo with 1 rule", groups)
	}
	if err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		s, err := prom.Query(ctx, `up{job="demo"}`)
		return err == nil && len(s) == 1 && s[0].Value == 1 && s[0].Metric["namespace"] == "test", nil
	}); err != nil {
		t.Fatalf("target never scraped: %v", err)
	}

	broken.Store(1)
	if _, err := prom.WaitForAlert(ctx, "DemoBroken", "firing", map[string]string{"namespace": "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := am.WaitForAlert(ctx, "DemoBroken", nil); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(deliveries) > 0, nil
	}); err != nil {
		t.Fatalf("webhook never called: %v\n%s", err, Tail(am.LogPath(), 20))
	}
	mu.Lock()
	first := deliveries[0]
	mu.Unlock()
	if first.auth != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want Bearer s3cret", first.auth)
	}
	if first.status != "firing" || len(first.alerts) != 1 || first.alerts[0].Labels["alertname"] != "DemoBroken" {
		t.Errorf("first delivery = %+v, want one firing DemoBroken", first)
	}

	broken.Store(0)
	if err := prom.WaitForAlertGone(ctx, "DemoBroken", nil); err != nil {
		t.Fatal(err)
	}
	if err := am.WaitForResolved(ctx, "DemoBroken", nil); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return deliveries[len(deliveries)-1].status == "resolved", nil
	}); err != nil {
		t.Fatalf("resolved notification never delivered: %v", err)
	}
}

func TestPrometheusConfigRendersJobs(t *testing.T) {
	b, err := PrometheusConfig{
		Jobs:          []ScrapeJob{{Name: "rem", Targets: []string{"127.0.0.1:1"}, HonorLabels: true, BearerTokenFile: "/tok"}},
		Alertmanagers: []string{"127.0.0.1:2"},
		RuleFiles:     []string{"/r/*.yml"},
	}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scrape_interval: 1s", "evaluation_interval: 1s", "honor_labels: true", "credentials_file: /tok", "- 127.0.0.1:2", "- /r/*.yml"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %q:\n%s", want, b)
		}
	}
}

func TestPrometheusConfigRejectsDuplicateJobs(t *testing.T) {
	_, err := PrometheusConfig{Jobs: []ScrapeJob{{Name: "a"}, {Name: "a"}}}.YAML()
	if err == nil || !strings.Contains(err.Error(), `"a" used twice`) {
		t.Fatalf("err = %v, want duplicate job error", err)
	}
	_, err = PrometheusConfig{Jobs: []ScrapeJob{{}}}.YAML()
	if err == nil || !strings.Contains(err.Error(), "jobs[0].name: required") {
		t.Fatalf("err = %v, want missing name error", err)
	}
}

func TestWebhookRouteRendersFastLoopDefaults(t *testing.T) {
	b, err := WebhookRoute{URL: "http://127.0.0.1:1/hook", GroupInterval: 1500 * time.Millisecond}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"group_wait: 0s", "group_interval: 1500ms", "repeat_interval: 3600s", "url: http://127.0.0.1:1/hook"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %q:\n%s", want, b)
		}
	}
	if _, err := (WebhookRoute{}).YAML(); err == nil {
		t.Error("empty URL accepted")
	}
}

func TestStopEndsServersAndRemovesTheirFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus and Alertmanager; skipped with -short")
	}
	cfg, err := WebhookRoute{URL: "http://127.0.0.1:1/"}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	am, err := NewAlertmanager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	prom, err := NewPrometheus(context.Background(), PrometheusConfig{Alertmanagers: []string{am.Addr}})
	if err != nil {
		am.Stop()
		t.Fatal(err)
	}
	prom.Stop()
	am.Stop()
	for _, dir := range []string{prom.dir, am.dir} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Stop (err=%v)", dir, err)
		}
	}
	for _, u := range []string{prom.URL, am.URL} {
		if resp, err := http.Get(u + "/-/healthy"); err == nil {
			resp.Body.Close()
			t.Errorf("%s still answers after Stop", u)
		}
	}
}

func TestAlertmanagerRejectsInvalidConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Alertmanager; skipped with -short")
	}
	_, err := NewAlertmanager(context.Background(), []byte("route: {receiver: nobody}\nreceivers: []\n"))
	if err == nil || !strings.Contains(err.Error(), "alertmanager") {
		t.Fatalf("err = %v, want a start error with the server's log", err)
	}
}

func TestQueryRangeAndLabelValuesReadScrapedSeries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE demo_value gauge\ndemo_value{kind=\"a\"} 1\ndemo_value{kind=\"b\"} 2\n")
	}))
	defer target.Close()
	prom := StartPrometheus(t, PrometheusConfig{
		Jobs: []ScrapeJob{{Name: "demo", Targets: []string{strings.TrimPrefix(target.URL, "http://")}}},
	})
	if err := Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		s, err := prom.Query(ctx, "demo_value")
		return err == nil && len(s) == 2, nil
	}); err != nil {
		t.Fatalf("waiting for the first scrape: %v", err)
	}
	// Steps run from start, so the last one is at end: the sample just
	// scraped is in the result.
	end := time.Now()
	start := end.Add(-10 * time.Second)
	series, err := prom.QueryRange(ctx, `demo_value{kind="b"}`, start, end, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || len(series[0].Values) == 0 || series[0].Values[len(series[0].Values)-1] != 2 || series[0].Metric["kind"] != "b" {
		t.Fatalf("QueryRange = %+v; want one series kind=b ending in 2", series)
	}
	for i, ts := range series[0].Times {
		if ts.Before(start.Add(-time.Millisecond)) || ts.After(end.Add(time.Millisecond)) {
			t.Errorf("sample %d at %v, outside [%v, %v]", i, ts, start, end)
		}
	}
	kinds, err := prom.LabelValues(ctx, "kind", `demo_value{job="demo"}`, start, end)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(kinds, ",") != "a,b" {
		t.Errorf("LabelValues(kind) = %v; want [a b]", kinds)
	}
	if none, err := prom.LabelValues(ctx, "kind", `absent_metric`, start, end); err != nil || len(none) != 0 {
		t.Errorf("LabelValues of a selector without series = %v, %v; want none", none, err)
	}
}
