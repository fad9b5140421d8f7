// Package exporter is the scrape framework: it reads the configuration,
// builds the collectors of the backend packages (exporter/postgres,
// exporter/redis, exporter/certs, exporter/authevents), runs them in
// parallel under each scrape's deadline and adds its own success and
// duration metrics. The backends satisfy Collector structurally and never
// import this package.
package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warden-sre/warden/exporter/authevents"
	"github.com/warden-sre/warden/exporter/certs"
	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
	"github.com/warden-sre/warden/internal/kubecore"
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

// Set is a group of collectors built from one configuration. A reload
// builds the next set from the previous one, carrying over every collector
// whose configuration did not change (with its connections, counters and
// log followers); the others are built anew.
//
// A set is in use by the scrapes running on it. Once retired (replaced by
// a reload, or at shutdown) it closes as soon as its last scrape has ended,
// and closing it closes the collectors no other set still holds.
type Set struct {
	Collectors []Collector
	members    []*member
	logger     *slog.Logger
	// modules are /probe's modules by name, probe its limits.
	modules map[string]*probeModule
	probe   ProbeConfig

	mu      sync.Mutex
	scrapes int  // scrapes running on the set
	retired bool // no new scrape will use it
	closing bool
	closed  chan struct{}
	err     error
}

// member is a collector with the number of sets holding it that are not
// closed yet; the last of them to close closes the collector.
type member struct {
	c   Collector
	key string // collector name and configuration
	// sets is changed only while building a set (one at a time, from the
	// current set) and while closing one.
	sets atomic.Int32
}

// acquire marks a scrape as running on s. The exporter calls it only on
// its current set, which is never retired while the exporter's lock is
// held for reading.
func (s *Set) acquire() {
	s.mu.Lock()
	s.scrapes++
	s.mu.Unlock()
}

// release ends a scrape that acquire began, closing a retired set when it
// was the last.
func (s *Set) release() {
	s.mu.Lock()
	s.scrapes--
	last := s.retired && s.scrapes == 0 && !s.closing
	if last {
		s.closing = true
	}
	s.mu.Unlock()
	if last {
		s.close()
	}
}

// Retire says the set will serve no new scrape; it closes once the scrapes
// still running on it have ended (at once when none is). Retire returns at
// once; a failure to close is logged.
func (s *Set) Retire() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.retired = true
	now := s.scrapes == 0 && !s.closing
	if now {
		s.closing = true
	}
	s.mu.Unlock()
	if now {
		s.close()
	}
}

// Close retires the set and waits until it is closed, i.e. until the
// scrapes running on it have ended.
func (s *Set) Close() error {
	if s == nil {
		return nil
	}
	s.Retire()
	<-s.closed
	return s.err
}

func (s *Set) close() {
	var errs []error
	for _, m := range s.members {
		if m.sets.Add(-1) > 0 {
			continue // carried over into a set still open
		}
		if cl, ok := m.c.(io.Closer); ok {
			if err := cl.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", m.c.Name(), err))
			}
		}
	}
	s.err = errors.Join(errs...)
	if s.err != nil && s.logger != nil {
		s.logger.Warn("closing collectors", "err", s.err)
	}
	close(s.closed)
}

// Build creates the collectors that cfg describes; cfg is a configuration
// from ParseConfig or LoadConfig, so defaults are applied and it is valid.
// Collectors of prev (the set in force, nil at start) whose configuration
// is unchanged are carried over instead of built again; prev itself is
// left to the caller to retire. Background work (log followers) of a
// collector lives until the collector is closed, with the last set that
// holds it, or until ctx ends.
func Build(ctx context.Context, cfg *Config, logger *slog.Logger, prev *Set) (*Set, error) {
	set := &Set{logger: logger, closed: make(chan struct{})}
	if err := set.build(ctx, cfg, logger, prev); err != nil {
		_ = set.Close()
		return nil, err
	}
	return set, nil
}

// configKey identifies a collector by its name and everything it is built
// from.
func configKey(name string, parts ...any) string {
	b, err := json.Marshal(parts)
	if err != nil { // plain configuration types always encode
		panic(fmt.Sprintf("encode configuration of %s: %v", name, err))
	}
	return name + "\x00" + string(b)
}

// add puts into set the collector key names: prev's when it has one,
// otherwise a new one from build.
func (set *Set) add(prev *Set, key string, build func() (Collector, error)) error {
	if prev != nil {
		for _, m := range prev.members {
			if m.key == key {
				m.sets.Add(1)
				set.members = append(set.members, m)
				set.Collectors = append(set.Collectors, m.c)
				return nil
			}
		}
	}
	c, err := build()
	if err != nil {
		return err
	}
	m := &member{c: c, key: key}
	m.sets.Store(1)
	set.members = append(set.members, m)
	set.Collectors = append(set.Collectors, c)
	return nil
}

func (set *Set) build(ctx context.Context, cfg *Config, logger *slog.Logger, prev *Set) error {
	set.probe = cfg.Probe
	if set.probe == (ProbeConfig{}) {
		set.probe = DefaultProbeConfig
	}
	set.modules = make(map[string]*probeModule, len(cfg.Modules))
	for name, m := range cfg.Modules {
		set.modules[name] = newProbeModule(name, m, logger)
	}
	for _, t := range cfg.Postgres {
		err := set.add(prev, configKey("postgres/"+t.Name, t), func() (Collector, error) {
			return postgres.New(t, logger.With("collector", "postgres/"+t.Name))
		})
		if err != nil {
			return err
		}
	}
	for _, t := range cfg.Redis {
		err := set.add(prev, configKey("redis/"+t.Name, t), func() (Collector, error) {
			return redis.New(t, logger.With("collector", "redis/"+t.Name))
		})
		if err != nil {
			return err
		}
	}
	// The Kubernetes client is made only when a collector that needs it is
	// built, not carried over.
	var client *kubecore.Client
	kubeClient := func() (*kubecore.Client, error) {
		if client != nil {
			return client, nil
		}
		c, err := kubecore.New(kubecore.Options{
			Kubeconfig: cfg.Kubernetes.Kubeconfig,
			UserAgent:  "warden-exporter",
			// Listing Secrets page by page and following pod logs make
			// bursts of requests; client-go's default of 5 per second
			// would throttle a scrape.
			QPS:   20,
			Burst: 40,
		})
		if err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		client = c
		return c, nil
	}
	if c := cfg.Certs; c != nil {
		certsLogger := logger.With("collector", "certs")
		var endpoints *certs.EndpointsCollector
		if c.Endpoints != nil {
			err := set.add(prev, configKey("certs/endpoints", c.Endpoints), func() (Collector, error) {
				return certs.NewEndpoints(c.Endpoints, certsLogger)
			})
			if err != nil {
				return err
			}
			endpoints, _ = set.Collectors[len(set.Collectors)-1].(*certs.EndpointsCollector)
		}
		if c.Files != nil {
			err := set.add(prev, configKey("certs/files", c.Files), func() (Collector, error) {
				return certs.NewFiles(c.Files, certsLogger), nil
			})
			if err != nil {
				return err
			}
		}
		if c.Kubernetes != nil {
			err := set.add(prev, configKey("certs/kubernetes", c.Kubernetes, cfg.Kubernetes), func() (Collector, error) {
				client, err := kubeClient()
				if err != nil {
					return nil, err
				}
				return certs.NewKubernetes(c.Kubernetes, client, certsLogger), nil
			})
			if err != nil {
				return err
			}
			// Served certificates are compared with the Secrets
			// (warden_certs_served_stale); relinked at every build, as
			// either collector may be new or carried over.
			if k, ok := set.Collectors[len(set.Collectors)-1].(*certs.KubernetesCollector); ok && endpoints != nil {
				endpoints.CompareWithSecrets(k)
			}
		} else if endpoints != nil {
			endpoints.CompareWithSecrets(nil)
		}
	}
	if a := cfg.Auth; a != nil {
		key := configKey("auth", a)
		if a.Kubernetes != nil {
			key = configKey("auth", a, cfg.Kubernetes)
		}
		err := set.add(prev, key, func() (Collector, error) {
			var client *kubecore.Client
			if a.Kubernetes != nil {
				var err error
				if client, err = kubeClient(); err != nil {
					return nil, err
				}
			}
			return authevents.New(ctx, a, client, logger.With("collector", "auth"))
		})
		if err != nil {
			return err
		}
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

	// coalesce shares one collection of the set among overlapping
	// scrapes of /metrics.
	coalesce coalescer
	// probes keeps the collectors of targets probed through /probe, across
	// reloads (a module left unchanged keeps its targets' pools).
	probes        *probeCache
	sharedScrapes atomic.Uint64
	sharedProbes  atomic.Uint64

	mu     sync.RWMutex
	set    *Set
	scrape ScrapeConfig
}

// New returns an exporter serving set, gathering self alongside.
func New(logger *slog.Logger, set *Set, scrape ScrapeConfig, self prometheus.Gatherer) *Exporter {
	e := &Exporter{logger: logger, set: set, scrape: scrape, self: self}
	probe := DefaultProbeConfig
	if set != nil {
		probe = set.probe
	}
	e.probes = newProbeCache(probe, logger)
	return e
}

// Swap installs a new collector set and scrape settings and returns the old
// set, for the caller to retire (it closes once its running scrapes end).
// Probed targets of modules that changed or went away are closed once no
// probe uses them; the others keep their pools.
func (e *Exporter) Swap(set *Set, scrape ScrapeConfig) *Set {
	e.mu.Lock()
	old := e.set
	e.set, e.scrape = set, scrape
	e.mu.Unlock()
	if set != nil {
		keep := map[string]bool{}
		for _, m := range set.modules {
			keep[m.key] = true
		}
		e.probes.configure(set.probe, keep)
	}
	return old
}

// Close stops serving: the set closes once its scrapes have ended, and
// the probed targets' pools once their probes have. It returns the set's
// close error.
func (e *Exporter) Close() error {
	old := e.Swap(nil, e.scrape)
	e.probes.close()
	return old.Close()
}

// Current is the set in force, to build the next one from.
func (e *Exporter) Current() *Set {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.set
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

// ServeHTTP runs one scrape, or shares the collection of an overlapping
// one (see coalescer).
func (e *Exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.RLock()
	set, scrapeCfg := e.set, e.scrape
	if set != nil {
		// Under the lock: a set is retired only after Swap has taken it
		// out, so it cannot close under this scrape.
		set.acquire()
	}
	e.mu.RUnlock()

	timeout := scrapeTimeout(r.Header, scrapeCfg)
	deadline := time.Now().Add(timeout)
	var collectors []Collector
	if set != nil {
		collectors = set.Collectors
	}
	release := func() {}
	if set != nil {
		release = set.release
	}
	f, shared := e.coalesce.scrape(r.Context(), set, deadline, e.logger, collectors, release)
	if shared {
		e.sharedScrapes.Add(1)
	}
	if f == nil {
		return // the scraper hung up
	}
	f.respond(w, r, func(w http.ResponseWriter, r *http.Request) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(scrapeResult{metrics: f.metrics, timeout: timeout}, selfCollector{e})
		e.serve(w, r, prometheus.Gatherers{reg, e.self})
	})
}

func (e *Exporter) serve(w http.ResponseWriter, r *http.Request, g prometheus.Gatherer) {
	promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(e.logger.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(w, r)
}

// selfCollector exposes the exporter's probe and coalescing metrics on
// /metrics.
type selfCollector struct{ e *Exporter }

func (s selfCollector) Describe(chan<- *prometheus.Desc) {}

func (s selfCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(scrapesSharedDesc, prometheus.CounterValue, float64(s.e.sharedScrapes.Load()), "metrics")
	ch <- prometheus.MustNewConstMetric(scrapesSharedDesc, prometheus.CounterValue, float64(s.e.sharedProbes.Load()), "probe")
	s.e.probes.collect(ch)
}

// scrape runs every collector in parallel until each finishes or ctx ends,
// and returns their metrics followed by a success and duration metric for
// each. A collector still running at ctx's deadline is reported as failed
// and its metrics are dropped; it is not waited for.
func scrape(ctx context.Context, logger *slog.Logger, collectors []Collector) []prometheus.Metric {
	metrics, _ := scrapeTracked(ctx, logger, collectors)
	return metrics
}

// scrapeTracked is scrape, and also returns a channel closed once every
// collector has returned, abandoned ones included.
func scrapeTracked(ctx context.Context, logger *slog.Logger, collectors []Collector) (metrics []prometheus.Metric, finished <-chan struct{}) {
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
	var running sync.WaitGroup
	allDone := make(chan struct{})
	for i, c := range collectors {
		running.Add(1)
		go func() {
			defer running.Done()
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

	go func() {
		running.Wait()
		close(allDone)
	}()

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
	return out, allDone
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
