package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
	"github.com/warden-sre/warden/internal/testenv"
)

// fakeCollector is a narrow stand-in for the framework tests only; the
// collectors themselves are tested against real servers.
type fakeCollector struct {
	name  string
	delay time.Duration
	err   error
	panic bool
}

var fakeDesc = prometheus.NewDesc("warden_test_value", "Test value.", []string{"name"}, nil)

func (f fakeCollector) Name() string { return f.name }

func (f fakeCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	if f.panic {
		panic("boom")
	}
	ch <- prometheus.MustNewConstMetric(fakeDesc, prometheus.GaugeValue, 1, f.name)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			// A collector that ignores ctx is the worst case: keep going.
			time.Sleep(f.delay)
		}
	}
	return f.err
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestScrapeIsolatesSlowFailingAndPanickingCollectors(t *testing.T) {
	collectors := []Collector{
		fakeCollector{name: "fast"},
		fakeCollector{name: "slow", delay: 5 * time.Second},
		fakeCollector{name: "failing", err: errors.New("connection refused")},
		fakeCollector{name: "panicking", panic: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	metrics := scrape(ctx, discard(), collectors)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("scrape took %s, want it bounded by the 300ms deadline", took)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapeResult{metrics: metrics, timeout: 300 * time.Millisecond})
	want := `
# HELP warden_exporter_collector_success Whether the collector finished without error within the scrape deadline (1) or not (0).
# TYPE warden_exporter_collector_success gauge
warden_exporter_collector_success{collector="failing"} 0
warden_exporter_collector_success{collector="fast"} 1
warden_exporter_collector_success{collector="panicking"} 0
warden_exporter_collector_success{collector="slow"} 0
# HELP warden_test_value Test value.
# TYPE warden_test_value gauge
warden_test_value{name="failing"} 1
warden_test_value{name="fast"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "warden_exporter_collector_success", "warden_test_value"); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutFromPrometheusHeader(t *testing.T) {
	cfg := ScrapeConfig{DefaultTimeout: 10 * time.Second, TimeoutOffset: 500 * time.Millisecond, MaxTimeout: 30 * time.Second}
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{"no header uses default minus offset", "", 9500 * time.Millisecond},
		{"header minus offset", "2", 1500 * time.Millisecond},
		{"fractional header", "0.75", 250 * time.Millisecond},
		{"offset larger than timeout keeps timeout", "0.2", 200 * time.Millisecond},
		{"capped at max", "120", 30 * time.Second},
		{"garbage falls back to default", "soon", 9500 * time.Millisecond},
		{"negative falls back to default", "-3", 9500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("X-Prometheus-Scrape-Timeout-Seconds", tt.header)
			}
			if got := scrapeTimeout(h, cfg); got != tt.want {
				t.Fatalf("Timeout = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestServeHTTPAppliesHeaderDeadline(t *testing.T) {
	set := &Set{Collectors: []Collector{fakeCollector{name: "fast"}, fakeCollector{name: "slow", delay: 10 * time.Second}}}
	self := prometheus.NewRegistry()
	e := New(discard(), set, DefaultScrapeConfig, self)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "1")
	rec := httptest.NewRecorder()
	start := time.Now()
	e.ServeHTTP(rec, req)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("scrape took %s with a 1s header", took)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`warden_exporter_collector_success{collector="fast"} 1`,
		`warden_exporter_collector_success{collector="slow"} 0`,
		`warden_exporter_scrape_timeout_seconds 0.5`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in:\n%s", want, body)
		}
	}
}

// hangingCollector waits for its target until ctx ends, then reports it
// down, as the PostgreSQL and Redis collectors do with a hung server.
type hangingCollector struct{}

func (hangingCollector) Name() string { return "hanging" }

func (hangingCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	<-ctx.Done()
	ch <- prometheus.MustNewConstMetric(fakeDesc, prometheus.GaugeValue, 0, "hanging")
	return ctx.Err()
}

func TestScrapeKeepsDownMetricOfCollectorThatHonoursTheDeadline(t *testing.T) {
	// A deadline long enough for the full 250ms reserve, so that a busy
	// machine still delivers the down metric in time.
	const deadline = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	metrics := scrape(ctx, discard(), []Collector{hangingCollector{}})
	if took := time.Since(start); took > deadline+time.Second {
		t.Fatalf("scrape took %s, want it bounded by the %s deadline", took, deadline)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapeResult{metrics: metrics, timeout: deadline})
	want := `
# HELP warden_exporter_collector_success Whether the collector finished without error within the scrape deadline (1) or not (0).
# TYPE warden_exporter_collector_success gauge
warden_exporter_collector_success{collector="hanging"} 0
# HELP warden_test_value Test value.
# TYPE warden_test_value gauge
warden_test_value{name="hanging"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "warden_exporter_collector_success", "warden_test_value"); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresPasswordNeverLogged scrapes a target that cannot be reached,
// with a password in the DSN, through the exporter's scrape loop, and checks
// neither the error nor the log mention the password.
func TestPostgresPasswordNeverLogged(t *testing.T) {
	const secret = "Sup3r-s3cret-pw"
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, dsn := range []string{
		fmt.Sprintf("postgres://mon:%s@127.0.0.1:%d/app?sslmode=disable", secret, port),
		fmt.Sprintf("host=127.0.0.1 port=%d user=mon password=%s dbname=app sslmode=disable", port, secret),
	} {
		target := postgres.DefaultTarget()
		target.Name, target.DSN = "main", dsn
		c, err := postgres.New(target, logger)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms := scrape(ctx, logger, []Collector{c})
		cancel()
		_ = c.Close()
		var up float64 = -1
		for _, m := range ms {
			if strings.Contains(m.Desc().String(), `"pg_up"`) {
				var pb dto.Metric
				_ = m.Write(&pb)
				up = pb.GetGauge().GetValue()
			}
		}
		if up != 0 {
			t.Errorf("pg_up = %v for an unreachable server, want 0", up)
		}
		err = c.Collect(context.Background(), make(chan prometheus.Metric, 100))
		if err == nil {
			t.Fatal("no error from an unreachable server")
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	if !strings.Contains(logs.String(), "collector failed") {
		t.Errorf("expected the failure to be logged, got %q", logs.String())
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("log leaks the password:\n%s", logs.String())
	}
}

// TestScrapeKeepsRedisDownWhenRedisIsPaused scrapes a Redis server that
// accepts connections but never answers: the scrape drops whatever a
// collector sends after the deadline, and the redis collector's earlier
// deadline must still get redis_up 0 into the output.
func TestScrapeKeepsRedisDownWhenRedisIsPaused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t)
	target := redis.DefaultTarget()
	target.Name, target.Address = "paused", r.Addr
	c, err := redis.New(target, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Resume() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var sawUp bool
	for _, m := range scrape(ctx, slog.New(slog.DiscardHandler), []Collector{c}) {
		if strings.Contains(m.Desc().String(), `"redis_up"`) {
			var pb dto.Metric
			if err := m.Write(&pb); err != nil {
				t.Fatal(err)
			}
			sawUp = pb.GetGauge().GetValue() == 0
		}
	}
	if !sawUp {
		t.Error("scrape with a 2s deadline lost redis_up 0 while Redis was paused")
	}
}
