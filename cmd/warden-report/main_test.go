package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

var end = time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)

// smallHistory is a day and an hour of a few series at a 15-minute
// resolution: enough for the daily report's services, PostgreSQL and
// request chart; everything else is missing.
func smallHistory() []byte {
	var b bytes.Buffer
	start := end.Add(-25 * time.Hour)
	write := func(name, labels string, value func(i int) float64) {
		fmt.Fprintf(&b, "# TYPE %s unknown\n", name)
		i := 0
		for t := start; !t.After(end); t = t.Add(15 * time.Minute) {
			fmt.Fprintf(&b, "%s{%s} %s %d\n", name, labels, strconv.FormatFloat(value(i), 'f', -1, 64), t.Unix())
			i++
		}
	}
	write("auth_requests_total", `job="auth-service",status="200"`, func(i int) float64 { return float64(i * 900 * 4) })
	write("pg_up", `target="main"`, func(int) float64 { return 1 })
	write("up", `job="auth-service",instance="auth-1"`, func(int) float64 { return 1 })
	b.WriteString("# EOF\n")
	return b.Bytes()
}

func TestDailyReportFromARealPrometheus(t *testing.T) {
	data := testenv.Backfill(t, smallHistory())
	prom := testenv.StartPrometheusOnData(t, data)
	dir := t.TempDir()
	tests := []struct {
		name   string
		output string
		want   []string
	}{
		{"markdown", "md", []string{
			"# Daily health check",
			"Report time: 2026-10-01T12:00:00Z.",
			"| auth-service | 1 | 1 | 100 % |",
			"| main | up | 100 % | – | – |",
			"connections: no data (metric pg\\_stat\\_database\\_numbackends not found)",
			"### Escalations to on-call\n\nno data (metric warden\\_remediator\\_build\\_info not found)",
			"no data (metric x509\\_cert\\_not\\_after not found)",
			"| Requests in 24 h | 345,600 |",
		}},
		{"html", "html", []string{"<!DOCTYPE html>", "<svg", "no data (metric x509_cert_not_after not found)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"daily", "--prometheus.url", prom.URL, "--at", end.Format(time.RFC3339), "--output", tt.output, "--out", filepath.Join(dir, "daily-{date}."+tt.output)}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, stderr.String())
			}
			b, err := os.ReadFile(filepath.Join(dir, "daily-2026-10-01."+tt.output))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("report lacks %q:\n%s", w, b)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("wrote to stdout with --out: %q", stdout.String())
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

// TestPrometheusClientConfigAuthenticates puts a reverse proxy that
// demands a bearer token in front of the real Prometheus: without
// --prometheus.config.file every query is refused and nothing is written;
// with the token from the config file the report is written.
func TestPrometheusClientConfigAuthenticates(t *testing.T) {
	data := testenv.Backfill(t, smallHistory())
	prom := testenv.StartPrometheusOnData(t, data)
	target, err := url.Parse(prom.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	guard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(guard.Close)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	configFile := filepath.Join(dir, "prometheus-client.yml")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(configFile, []byte("authorization:\n  credentials_file: "+tokenFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "daily.md")
	args := []string{"daily", "--prometheus.url", guard.URL, "--at", end.Format(time.RFC3339), "--out", out}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != 1 {
		t.Fatalf("without credentials: exit %d; want 1\n%s", code, stderr.String())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("without credentials a report was written (stat: %v)", err)
	}
	stderr.Reset()
	if code := run(context.Background(), append(args, "--prometheus.config.file", configFile), &stdout, &stderr); code != 0 {
		t.Fatalf("with credentials: exit %d\n%s", code, stderr.String())
	}
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "| Requests in 24 h | 345,600 |") {
		t.Fatalf("report %q, %v; want the requests of the history", b, err)
	}
	if strings.Contains(stderr.String(), "s3cret") {
		t.Errorf("the token appears in the log:\n%s", stderr.String())
	}
}

func TestUnreachablePrometheusWritesNoReport(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "weekly.md")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"weekly", "--prometheus.url", "http://127.0.0.1:" + strconv.Itoa(port), "--out", out}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d; want 1:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("report written although every query failed (stat: %v)", err)
	}
	if !strings.Contains(stderr.String(), "every query failed") {
		t.Errorf("stderr does not say why:\n%s", stderr.String())
	}
}

func TestBadArgumentsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"yearly"},
		{"daily", "--output", "pdf"},
		{"daily", "--at", "last tuesday"},
		{"daily", "--prometheus.config.file", filepath.Join(t.TempDir(), "missing.yml")},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d; want 2\n%s", args, code, stderr.String())
		}
	}
}

func TestParseAt(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"now", now},
		{"", now},
		{"now-1d", now.Add(-24 * time.Hour)},
		{"-12h", now.Add(-12 * time.Hour)},
		{"now-1w", now.Add(-7 * 24 * time.Hour)},
		{"2026-02-01T00:00:00Z", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-02-01T01:00:00+01:00", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"1700000000", time.Unix(1700000000, 0)},
	}
	for _, tt := range tests {
		got, err := parseAt(tt.in, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseAt(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"yesterday", "now-", "now+1d", "-1x"} {
		if _, err := parseAt(bad, now); err == nil {
			t.Errorf("parseAt(%q) accepted", bad)
		}
	}
}
