package exporter

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var scrapesSharedDesc = prometheus.NewDesc(
	"warden_exporter_scrapes_shared_total",
	"Scrapes (handler=\"metrics\") and probes (handler=\"probe\") answered from a collection that an overlapping one had started, instead of collecting again.",
	[]string{"handler"}, nil)

// coalescer lets scrapes that overlap share one collection, the way a
// Prometheus HA pair scraping the same exporter at nearly the same moment
// needs one: a scrape that arrives while a collection is in flight takes
// its result instead of starting another, as long as that collection ends
// no later than the scrape's own deadline. One that needs an answer sooner
// starts its own collection.
type coalescer struct {
	mu     sync.Mutex
	flight *collection
	// waiting counts the scrapes waiting for another's collection.
	waiting atomic.Int32
}

// collection is one run of the collectors and its result.
type collection struct {
	owner    any // what was collected: a set, or nil for a probed target
	deadline time.Time
	done     chan struct{}
	metrics  []prometheus.Metric

	// answers are the encoded responses, one per Accept and
	// Accept-Encoding: the scrapes sharing the collection share its
	// encoding too, so a burst of them costs one gzip writer, not one
	// each.
	mu      sync.Mutex
	answers map[string]*answer
}

// answer is one encoded response.
type answer struct {
	once   sync.Once
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *answer) Header() http.Header { return a.header }

func (a *answer) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}

func (a *answer) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

// respond writes to w the answer render gives for r's Accept and
// Accept-Encoding, rendering it the first time only.
func (f *collection) respond(w http.ResponseWriter, r *http.Request, render func(http.ResponseWriter, *http.Request)) {
	key := r.Header.Get("Accept") + "\x00" + r.Header.Get("Accept-Encoding")
	f.mu.Lock()
	if f.answers == nil {
		f.answers = map[string]*answer{}
	}
	a := f.answers[key]
	if a == nil {
		a = &answer{header: http.Header{}}
		f.answers[key] = a
	}
	f.mu.Unlock()
	a.once.Do(func() {
		render(a, r)
		if a.status == 0 {
			a.status = http.StatusOK
		}
	})
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(a.body.Len()))
	w.WriteHeader(a.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body.Bytes())
	}
}

// collect returns the collection in flight for owner when it ends by
// deadline, or else runs one with run under deadline. run's context does
// not end with ctx: a scrape that hangs up leaves the others sharing its
// collection unaffected; a collection never outlives its deadline. shared
// reports whether another scrape's collection answered. A shared scrape
// whose ctx ends before the collection gets nil.
func (c *coalescer) collect(ctx context.Context, owner any, deadline time.Time, run func(context.Context) []prometheus.Metric) (f *collection, shared bool) {
	c.mu.Lock()
	if f := c.flight; f != nil && f.owner == owner && !f.deadline.After(deadline) {
		c.mu.Unlock()
		c.waiting.Add(1)
		defer c.waiting.Add(-1)
		select {
		case <-f.done:
			return f, true
		case <-ctx.Done():
			return nil, true
		}
	}
	f = &collection{owner: owner, deadline: deadline, done: make(chan struct{})}
	c.flight = f
	c.mu.Unlock()

	runCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	f.metrics = run(runCtx)
	cancel()
	c.mu.Lock()
	if c.flight == f {
		c.flight = nil
	}
	c.mu.Unlock()
	close(f.done)
	return f, false
}

// scrape is collect running collectors (scrapeTracked). release frees what
// the request holds for them: at once when another scrape's collection
// answered, otherwise once every collector has returned, since one
// abandoned at the deadline may still be using its connections.
func (c *coalescer) scrape(ctx context.Context, owner any, deadline time.Time, logger *slog.Logger, collectors []Collector, release func()) (f *collection, shared bool) {
	ran := false
	f, shared = c.collect(ctx, owner, deadline, func(ctx context.Context) []prometheus.Metric {
		metrics, finished := scrapeTracked(ctx, logger, collectors)
		ran = true
		go func() {
			<-finished
			release()
		}()
		return metrics
	})
	if !ran {
		release()
	}
	return f, shared
}
