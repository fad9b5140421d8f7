package exporter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
		fakeCollector{name: "nodata", err: ErrNoData},
		fakeCollector{name: "panicking", panic: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	metrics := Scrape(ctx, discard(), collectors)
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
warden_exporter_collector_success{collector="nodata"} 1
warden_exporter_collector_success{collector="panicking"} 0
warden_exporter_collector_success{collector="slow"} 0
# HELP warden_test_value Test value.
# TYPE warden_test_value gauge
warden_test_value{name="failing"} 1
warden_test_value{name="fast"} 1
warden_test_value{name="nodata"} 1
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
			if got := Timeout(h, cfg); got != tt.want {
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	metrics := Scrape(ctx, discard(), []Collector{hangingCollector{}})
	if took := time.Since(start); took > time.Second+100*time.Millisecond {
		t.Fatalf("scrape took %s, want within the 1s deadline", took)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapeResult{metrics: metrics, timeout: time.Second})
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
