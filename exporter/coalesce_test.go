package exporter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/internal/testenv"
)

// gatedCollector counts its collections and holds each until the test
// opens the gate (or ctx ends).
type gatedCollector struct {
	calls   atomic.Int32
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedCollector) Name() string { return "gated" }

func (g *gatedCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	g.calls.Add(1)
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	ch <- prometheus.MustNewConstMetric(fakeDesc, prometheus.GaugeValue, 1, "gated")
	return nil
}

func scrapeWithTimeout(t *testing.T, url, timeout string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Error(err)
		return ""
	}
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeout)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

// gatedExporter serves one gatedCollector.
func gatedExporter(t *testing.T) (*gatedCollector, *Exporter, *httptest.Server) {
	g := &gatedCollector{entered: make(chan struct{}, 16), gate: make(chan struct{})}
	set := &Set{Collectors: []Collector{g}, closed: make(chan struct{}), probe: DefaultProbeConfig}
	e := New(discard(), set, ScrapeConfig{DefaultTimeout: 10 * time.Second, MaxTimeout: time.Minute}, prometheus.NewRegistry())
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return g, e, srv
}

func TestOverlappingScrapesShareOneCollection(t *testing.T) {
	g, e, srv := gatedExporter(t)

	var wg sync.WaitGroup
	bodies := make([]string, 10)
	wg.Go(func() { bodies[0] = scrapeWithTimeout(t, srv.URL, "30") })
	<-g.entered // the first collection is in flight
	for i := 1; i < len(bodies); i++ {
		// Same timeout, later start: a later deadline than the flight's.
		wg.Go(func() { bodies[i] = scrapeWithTimeout(t, srv.URL, "30") })
	}
	testenv.WaitFor(t, time.Minute, "the other scrapes join the collection", func() bool {
		return int(e.coalesce.waiting.Load()) == len(bodies)-1
	})
	close(g.gate)
	wg.Wait()

	if n := g.calls.Load(); n != 1 {
		t.Errorf("%d collections for %d overlapping scrapes, want 1", n, len(bodies))
	}
	for i, b := range bodies {
		if !strings.Contains(b, `warden_test_value{name="gated"} 1`) {
			t.Errorf("scrape %d lacks the shared collection's metric:\n%s", i, b)
		}
	}
	if n := e.sharedScrapes.Load(); n != uint64(len(bodies)-1) {
		t.Errorf("warden_exporter_scrapes_shared_total = %d, want %d", n, len(bodies)-1)
	}
	if !strings.Contains(scrapeNow(t, srv.URL, g), `warden_exporter_scrapes_shared_total{handler="metrics"} 9`) {
		t.Errorf("the shared scrapes are not counted on /metrics")
	}
}

func TestScrapeNeedingAnAnswerSoonerDoesNotWaitForTheCollectionInFlight(t *testing.T) {
	g, e, srv := gatedExporter(t)

	var wg sync.WaitGroup
	wg.Go(func() { scrapeWithTimeout(t, srv.URL, "60") })
	<-g.entered
	// A deadline earlier than the flight's: its own collection.
	var short string
	wg.Go(func() { short = scrapeWithTimeout(t, srv.URL, "1") })
	<-g.entered
	close(g.gate)
	wg.Wait()
	if n := g.calls.Load(); n != 2 {
		t.Errorf("%d collections, want 2: the shorter deadline must not share the longer one's", n)
	}
	if e.sharedScrapes.Load() != 0 {
		t.Errorf("a scrape was counted as shared")
	}
	if !strings.Contains(short, `warden_test_value{name="gated"} 1`) {
		t.Errorf("the short scrape lacks its own collection's metric:\n%s", short)
	}
}

// scrapeNow scrapes with the collector's gate already open.
func scrapeNow(t *testing.T, url string, g *gatedCollector) string {
	t.Helper()
	done := make(chan string)
	go func() { done <- scrapeWithTimeout(t, url, "10") }()
	<-g.entered
	return <-done
}
