package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

func TestWithoutSubcommandTheBinaryServes(t *testing.T) {
	f, err := parseFlags([]string{"--config.file", "p.yml", "--no-auth"})
	if err != nil {
		t.Fatal(err)
	}
	if f.command != "serve" {
		t.Fatalf("command %q, want serve", f.command)
	}
	f, err = parseFlags([]string{"simulate", "--config.file", "p.yml", "--from", "2026-11-02T00:00:00Z", "--to", "1793581200", "--alerts", "a.json", "--output", "json"})
	if err != nil {
		t.Fatal(err)
	}
	if f.command != simulateCommand || f.configFile != "p.yml" || f.simulate.output != "json" || f.simulate.alertsFile != "a.json" {
		t.Fatalf("simulate flags not parsed: %+v", f)
	}
	if _, err := parseFlags([]string{"simulate", "--from", "x", "--to", "y", "--output", "yaml"}); err == nil {
		t.Error("--output yaml is accepted")
	}
}

const cliPolicy = `
defaults: {cooldown: 30m}
rules:
  - name: restart-on-errors
    matchers: ['alertname="HighErrorRate"']
    action: restart
    target: {namespace: '{{ .Labels.namespace }}', deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [prod], deployments: [auth-service]}
`

// savedBody is one webhook body with its receipt time, as --alerts reads
// it.
func savedBody(t *testing.T, received, status, startsAt string) string {
	t.Helper()
	alert := map[string]any{
		"status": status, "fingerprint": "0f1e2d3c4b5a6978", "startsAt": startsAt, "endsAt": "0001-01-01T00:00:00Z",
		"labels":      map[string]string{"alertname": "HighErrorRate", "namespace": "prod", "deployment": "auth-service"},
		"annotations": map[string]string{}, "generatorURL": "",
	}
	if status == "resolved" {
		alert["endsAt"] = received
	}
	b, err := json.Marshal(map[string]any{
		"version": "4", "status": status, "receiver": "warden-remediator", "groupKey": "{}:{}", "truncatedAlerts": 0,
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager:9093", "alerts": []any{alert}, "receivedAt": received,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSimulateSubcommandReplaysSavedBodies(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yml")
	alerts := filepath.Join(dir, "alerts.jsonl")
	lines := []string{
		savedBody(t, "2026-11-02T01:00:00Z", "firing", "2026-11-02T00:59:30Z"),
		savedBody(t, "2026-11-02T01:05:00Z", "firing", "2026-11-02T00:59:30Z"),
		savedBody(t, "2026-11-02T01:06:00Z", "resolved", "2026-11-02T00:59:30Z"),
		savedBody(t, "2026-11-02T01:10:00Z", "firing", "2026-11-02T01:09:45Z"),
	}
	if err := os.WriteFile(policy, []byte(cliPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alerts, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(format string) string {
		t.Helper()
		f, err := parseFlags([]string{"simulate", "--config.file", policy, "--alerts", alerts,
			"--from", "2026-11-02T00:00:00Z", "--to", "2026-11-02T02:00:00Z", "--output", format})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := simulate(context.Background(), f, &out, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	for _, format := range []string{"text", "markdown", "json"} {
		t.Run(format, func(t *testing.T) {
			first, second := run(format), run(format)
			if first != second {
				t.Fatalf("two runs differ:\n%s\n----\n%s", first, second)
			}
			if !strings.Contains(first, "2026-11-02T01:00:00Z") {
				t.Errorf("no action at 01:00:00 in:\n%s", first)
			}
		})
	}
	var rep struct {
		Actions []struct {
			Target       string `json:"target"`
			Verification string `json:"verification"`
		} `json:"actions"`
		Refusals []struct {
			Reason string `json:"reason"`
			Count  int    `json:"count"`
		} `json:"refusals"`
	}
	if err := json.Unmarshal([]byte(run("json")), &rep); err != nil {
		t.Fatal(err)
	}
	// 01:00 acts; the repeat at 01:05 is a duplicate; the new occurrence
	// at 01:10 is within the cooldown.
	if got := fmt.Sprint(rep.Actions, rep.Refusals); got != "[{deployment/auth-service effective}] [{cooldown 1} {duplicate 1}]" {
		t.Errorf("actions and refusals: %s", got)
	}
}

func TestSimulateSubcommandRejectsBadArguments(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yml")
	if err := os.WriteFile(policy, []byte(cliPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--from", "yesterday", "--to", "2026-11-02T00:00:00Z", "--alerts", "x"}, "--from"},
		{[]string{"--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z", "--alerts", "x"}, "--to must be after --from"},
		{[]string{"--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z"}, "exactly one of --prometheus.url"},
		{[]string{"--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z", "--alerts", "x", "--prometheus.url", "http://127.0.0.1:1"}, "exactly one of --prometheus.url"},
		{[]string{"--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z", "--alerts", filepath.Join(dir, "missing.json")}, "--alerts"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			f, err := parseFlags(append([]string{"simulate", "--config.file", policy}, tt.args...))
			if err != nil {
				t.Fatal(err)
			}
			err = simulate(context.Background(), f, &bytes.Buffer{}, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSimulateSubcommandReadsALERTSFromPrometheus(t *testing.T) {
	var om strings.Builder
	om.WriteString("# TYPE ALERTS gauge\n")
	// auth-service fires from 01:00:00 to 01:05:00, evaluated every 15s.
	for ts := int64(1793581200); ts < 1793581200+300; ts += 15 {
		fmt.Fprintf(&om, "ALERTS{alertname=\"HighErrorRate\",alertstate=\"firing\",namespace=\"prod\",deployment=\"auth-service\"} 1 %d\n", ts)
	}
	om.WriteString("# EOF\n")
	prom := testenv.StartPrometheusOnData(t, testenv.Backfill(t, []byte(om.String())))
	policy := filepath.Join(t.TempDir(), "policy.yml")
	if err := os.WriteFile(policy, []byte(cliPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := parseFlags([]string{"simulate", "--config.file", policy, "--prometheus.url", prom.URL, "--query.step", "15s",
		"--from", "2026-11-02T00:00:00Z", "--to", "2026-11-02T02:00:00Z", "--output", "markdown"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := simulate(context.Background(), f, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	// group_wait 30s after the alert fired; it stopped 5m after firing.
	want := "| 2026-11-02T01:00:30Z | restart-on-errors | restart | prod/deployment/auth-service | HighErrorRate | effective after 4m30s |"
	if !strings.Contains(out.String(), want) {
		t.Errorf("no row %q in:\n%s", want, out.String())
	}
}
