// Package exporter is the scrape framework: it reads the configuration,
// builds the collectors of the backend packages (exporter/postgres,
// exporter/redis, exporter/certs, exporter/authevents), runs them in
// parallel under each scrape's deadline and adds its own success and
// duration metrics. The backends satisfy Collector structurally and never
// import this package.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/exporter/authevents"
	"github.com/warden-sre/warden/exporter/certs"
	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
	"github.com/warden-sre/warden/internal/kubeclient"
)

var (
	collectorSuccessDesc = prometheus.NewDesc(
		"warden_exporter_collector_success",
		"Whether the collector finished without error within the scrape deadline (1) or not (0).",
		[]string{"collector"}, nil)
	collectorDurationDesc = prometheus.NewDesc(
		"warden_exporter_collector_duration_seconds",
		"How long the collector took in this scrape, up to the deadline.",
		[]string{"collector"}, nil)
	scrapeTimeoutDesc = prometheus.NewDesc(
		"warden_exporter_scrape_timeout_seconds",
		"The deadline applied to this scrape.",
		nil, nil)
)

// Set is a group of collectors built from one configuration. Closing it
// releases their connections and background work.
type Set struct {
	Collectors []Collector
	cancel     context.CancelFunc
}

// Close stops the set's background work and closes every collector that
// holds resources.
func (s *Set) Close() error {
	if s == nil {
		return nil
	}
	if s.cancel != nil {
		s.cancel()
	}
	var errs []error
	for _, c := range s.Collectors {
		if cl, ok := c.(io.Closer); ok {
			if err := cl.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", c.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Build creates the collectors that cfg describes; cfg is a configuration
// from ParseConfig or LoadConfig, so defaults are applied and it is valid.
// Background work (log followers) lives until the returned Set is closed.
func Build(ctx context.Context, cfg *Config, logger *slog.Logger) (*Set, error) {
	ctx, cancel := context.WithCancel(ctx)
	set := &Set{cancel: cancel}
	if err := set.build(ctx, cfg, logger); err != nil {
		_ = set.Close()
		return nil, err
	}
	return set, nil
}

func (set *Set) build(ctx context.Context, cfg *Config, logger *slog.Logger) error {
	for _, t := range cfg.Postgres {
		c, err := postgres.New(t, logger.With("collector", "postgres/"+t.Name))
		if err != nil {
			return err
		}
		set.Collectors = append(set.Collectors, c)
	}
	for _, t := range cfg.Redis {
		c, err := redis.New(t, logger.With("collector", "redis/"+t.Name))
		if err != nil {
			return err
		}
		set.Collectors = append(set.Collectors, c)
	}
	var client kubernetes.Interface
	if (cfg.Certs != nil && cfg.Certs.Kubernetes != nil) || (cfg.Auth != nil && cfg.Auth.Kubernetes != nil) {
		var err error
		client, _, err = kubeclient.New(kubeclient.Options{
			Kubeconfig: cfg.Kubernetes.Kubeconfig,
			UserAgent:  "warden-exporter",
			// Listing Secrets page by page and following pod logs make
			// bursts of requests; client-go's default of 5 per second
			// would throttle a scrape.
			QPS:   20,
			Burst: 40,
		})
		if err != nil {
			return fmt.Errorf("kubernetes: %w", err)
		}
	}
	if c := cfg.Certs; c != nil {
		certsLogger := logger.With("collector", "certs")
		if c.Endpoints != nil {
			ec, err := certs.NewEndpoints(c.Endpoints, certsLogger)
			if err != nil {
				return err
			}
			set.Collectors = append(set.Collectors, ec)
		}
		if c.Files != nil {
			set.Collectors = append(set.Collectors, certs.NewFiles(c.Files, certsLogger))
		}
		if c.Kubernetes != nil {
			set.Collectors = append(set.Collectors, certs.NewKubernetes(c.Kubernetes, client, certsLogger))
		}
	}
	if cfg.Auth != nil {
		c, err := authevents.New(ctx, cfg.Auth, client, logger.With("collector", "auth"))
		if err != nil {
			return err
		}
		set.Collectors = append(set.Collectors, c)
	}
	return nil
}

// Exporter serves the metrics of the current collector set. Its set and
// scrape settings can be swapped at run time (config reload).
type Exporter struct {
	logger *slog.Logger
	// self holds the exporter's own process, Go and reload metrics; it is
	// gathered together with each scrape's fresh registry.
	self prometheus.Gatherer

	mu     sync.RWMutex
	set    *Set
	scrape ScrapeConfig
}

// New returns an exporter serving set, gathering self alongside.
func New(logger *slog.Logger, set *Set, scrape ScrapeConfig, self prometheus.Gatherer) *Exporter {
	return &Exporter{logger: logger, set: set, scrape: scrape, self: self}
}

// Swap installs a new collector set and scrape settings and returns the old
// set, which the caller closes once in-flight scrapes no longer need it.
func (e *Exporter) Swap(set *Set, scrape ScrapeConfig) *Set {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.set
	e.set, e.scrape = set, scrape
	return old
}

// scrapeTimeout derives a scrape's deadline from Prometheus's header, minus the
// configured offset, bounded by the configured maximum.
func scrapeTimeout(h http.Header, cfg ScrapeConfig) time.Duration {
	timeout := cfg.DefaultTimeout
	if v := h.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
			timeout = time.Duration(s * float64(time.Second))
		}
	}
	if timeout-cfg.TimeoutOffset > 0 {
		timeout -= cfg.TimeoutOffset
	}
	if cfg.MaxTimeout > 0 && timeout > cfg.MaxTimeout {
		timeout = cfg.MaxTimeout
	}
	return timeout
}

// ServeHTTP runs one scrape.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.RLock()
	set, scrapeCfg := e.set, e.scrape
	e.mu.RUnlock()

	timeout := scrapeTimeout(r.Header, scrapeCfg)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	var collectors []Collector
	if set != nil {
		collectors = set.Collectors
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapeResult{metrics: scrape(ctx, e.logger, collectors), timeout: timeout})
	promhttp.HandlerFor(prometheus.Gatherers{reg, e.self}, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(e.logger.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(w, r)
}

// scrape runs every collector in parallel until each finishes or ctx ends,
// and returns their metrics followed by a success and duration metric for
// each. A collector still running at ctx's deadline is reported as failed
// and its metrics are dropped; it is not waited for.
func scrape(ctx context.Context, logger *slog.Logger, collectors []Collector) []prometheus.Metric {
	type result struct {
		i       int
		metrics []prometheus.Metric
		err     error
		dur     time.Duration
	}
	start := time.Now()
	// Collectors get a deadline a little before the scrape's (a tenth of
	// the time left, at most 250ms): a collector whose target hangs then
	// still has time to report it down (pg_up 0, redis_up 0) instead of
	// having all its metrics dropped at the deadline.
	collectCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		reserve := min(time.Until(dl)/10, 250*time.Millisecond)
		var cancel context.CancelFunc
		collectCtx, cancel = context.WithDeadline(ctx, dl.Add(-reserve))
		defer cancel()
	}
	// Buffered so that abandoned collectors can finish without a reader.
	done := make(chan result, len(collectors))
	for i, c := range collectors {
		go func() {
			ch := make(chan prometheus.Metric, 64)
			var ms []prometheus.Metric
			drained := make(chan struct{})
			go func() {
				for m := range ch {
					ms = append(ms, m)
				}
				close(drained)
			}()
			err := collectSafely(collectCtx, c, ch)
			close(ch)
			<-drained
			done <- result{i: i, metrics: ms, err: err, dur: time.Since(start)}
		}()
	}

	results := make([]*result, len(collectors))
	for received := 0; received < len(collectors); received++ {
		select {
		case r := <-done:
			results[r.i] = &r
		case <-ctx.Done():
			received = len(collectors) // stop waiting
		}
	}

	var out []prometheus.Metric
	for i, c := range collectors {
		r := results[i]
		success, dur := 0.0, time.Since(start)
		switch {
		case r == nil:
			logger.Warn("collector did not finish before the scrape deadline", "collector", c.Name(), "deadline_seconds", deadlineSeconds(ctx, start))
		case r.err != nil:
			logger.Warn("collector failed", "collector", c.Name(), "err", r.err, "duration_seconds", r.dur.Seconds())
			out = append(out, r.metrics...)
			dur = r.dur
		default:
			out = append(out, r.metrics...)
			success, dur = 1, r.dur
		}
		out = append(out,
			prometheus.MustNewConstMetric(collectorSuccessDesc, prometheus.GaugeValue, success, c.Name()),
			prometheus.MustNewConstMetric(collectorDurationDesc, prometheus.GaugeValue, dur.Seconds(), c.Name()),
		)
	}
	return out
}

func deadlineSeconds(ctx context.Context, start time.Time) float64 {
	if d, ok := ctx.Deadline(); ok {
		return d.Sub(start).Seconds()
	}
	return 0
}

// collectSafely turns a collector's panic into an error so that one bad
// collector cannot take the exporter down.
func collectSafely(ctx context.Context, c Collector, ch chan<- prometheus.Metric) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("collector %s panicked: %v\n%s", c.Name(), p, debug.Stack())
		}
	}()
	return c.Collect(ctx, ch)
}

// scrapeResult exposes one scrape's pre-collected metrics. It is an
// unchecked collector: the set of metrics depends on the targets' answers.
type scrapeResult struct {
	metrics []prometheus.Metric
	timeout time.Duration
}

func (s scrapeResult) Describe(chan<- *prometheus.Desc) {}

func (s scrapeResult) Collect(ch chan<- prometheus.Metric) {
	for _, m := range s.metrics {
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(scrapeTimeoutDesc, prometheus.GaugeValue, s.timeout.Seconds())
}
