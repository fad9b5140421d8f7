package exporter

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testCollector adapts a Collector to prometheus.Collector for testutil and
// registries, running each Collect with its own timeout and remembering the
// last Collect error.
type testCollector struct {
	c       Collector
	timeout time.Duration
	mu      sync.Mutex
	err     error
}

func (a *testCollector) Describe(chan<- *prometheus.Desc) {}

func (a *testCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	err := a.c.Collect(ctx, ch)
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

func (a *testCollector) lastErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
