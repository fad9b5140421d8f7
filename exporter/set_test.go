package exporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/internal/testenv"
)

// closingCollector records whether it was closed; Collect blocks until
// unblock is closed (nil: returns at once), ignoring ctx like the worst
// collector would.
type closingCollector struct {
	name    string
	unblock chan struct{}
	closed  atomic.Bool
}

func (c *closingCollector) Name() string { return c.name }

func (c *closingCollector) Collect(_ context.Context, _ chan<- prometheus.Metric) error {
	if c.unblock != nil {
		<-c.unblock
	}
	return nil
}

func (c *closingCollector) Close() error {
	c.closed.Store(true)
	return nil
}

// testSet builds a set of the given collectors (keys are their names),
// carrying over prev's collectors with the same name.
func testSet(t *testing.T, prev *Set, cs ...*closingCollector) *Set {
	t.Helper()
	set := &Set{logger: discard(), closed: make(chan struct{})}
	for _, c := range cs {
		if err := set.add(prev, c.name, func() (Collector, error) { return c, nil }); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

func TestRetiredSetClosesWhatWasNotCarriedOver(t *testing.T) {
	kept, dropped, added := &closingCollector{name: "kept"}, &closingCollector{name: "dropped"}, &closingCollector{name: "added"}
	first := testSet(t, nil, kept, dropped)
	// The second set names "kept" again: it gets first's collector, not
	// the new one offered.
	second := testSet(t, first, &closingCollector{name: "kept"}, added)
	if second.Collectors[0] != Collector(kept) {
		t.Fatal("unchanged collector was not carried over")
	}
	first.Retire()
	if !dropped.closed.Load() || kept.closed.Load() || added.closed.Load() {
		t.Fatalf("after retiring the first set: dropped closed %t, kept closed %t, added closed %t; want true false false",
			dropped.closed.Load(), kept.closed.Load(), added.closed.Load())
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if !kept.closed.Load() || !added.closed.Load() {
		t.Fatal("closing the last set left collectors open")
	}
}

// TestRetiredSetClosesWhenItsLastScrapeEnds: a set replaced while a scrape
// runs on it stays open until that scrape's collectors have all returned,
// including one abandoned at the scrape deadline, and closes right after.
func TestRetiredSetClosesWhenItsLastScrapeEnds(t *testing.T) {
	slow := &closingCollector{name: "slow", unblock: make(chan struct{})}
	set := testSet(t, nil, slow)
	e := New(discard(), set, ScrapeConfig{DefaultTimeout: 200 * time.Millisecond, MaxTimeout: time.Second}, prometheus.NewRegistry())

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil)) // returns at the deadline
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape status %d", rec.Code)
	}
	e.Swap(testSet(t, nil), DefaultScrapeConfig).Retire()
	if slow.closed.Load() {
		t.Fatal("set closed while an abandoned collector was still running")
	}
	close(slow.unblock)
	testenv.WaitFor(t, 30*time.Second, "the retired set to close", slow.closed.Load)
	select {
	case <-set.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not finish")
	}
}
