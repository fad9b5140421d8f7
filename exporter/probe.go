package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/exporter/certs"
	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
)

// probeModule is a module ready to build collectors for targets.
type probeModule struct {
	name string
	// key identifies the module's settings: a probed target's pool is
	// kept across a reload only while its module's key is unchanged.
	key    string
	cfg    Module
	cost   int
	logger *slog.Logger
}

func newProbeModule(name string, m Module, logger *slog.Logger) *probeModule {
	// allowed_targets only gates requests: changing it keeps the pools.
	key := configKey("module/"+name, m.Type, m.Postgres, m.Redis, m.TLS)
	return &probeModule{name: name, key: key, cfg: m, cost: m.connections(), logger: logger.With("module", name)}
}

// build creates the collector of the module's backend for t.
func (m *probeModule) build(t probeTarget) (Collector, error) {
	logger := m.logger.With("target", t.String())
	switch m.cfg.Type {
	case moduleTypePostgres:
		pt, err := m.cfg.postgresTarget(t)
		if err != nil {
			return nil, err
		}
		return postgres.New(pt, logger)
	case moduleTypeRedis:
		return redis.New(m.cfg.redisTarget(t), logger)
	case moduleTypeTLS:
		return certs.NewEndpoints(m.cfg.tlsConfig(t), logger)
	}
	return nil, fmt.Errorf("module %s: unknown type %q", m.name, m.cfg.Type)
}

// namedCollector reports a probed target's collector under its module's
// name ("probe/<module>") in the exporter's own metrics.
type namedCollector struct {
	Collector
	name string
}

func (n namedCollector) Name() string { return n.name }

// ServeProbe answers GET /probe?target=<address>&module=<name>: one
// collection of the module's backend against target, blackbox_exporter
// style, in a fresh registry. The scrape deadline, the connection caps and
// the *_up metrics are those of configured targets; a target the module
// does not allow, an unknown module or a malformed target is refused with
// 400. Overlapping probes of the same target share one collection.
func (e *Exporter) ServeProbe(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	e.mu.RLock()
	set, scrapeCfg := e.set, e.scrape
	e.mu.RUnlock()
	if set == nil {
		http.Error(w, "the exporter is shutting down", http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	name := q.Get("module")
	if name == "" {
		http.Error(w, "module parameter is required", http.StatusBadRequest)
		return
	}
	m, ok := set.modules[name]
	if !ok {
		http.Error(w, fmt.Sprintf("unknown module %q", name), http.StatusBadRequest)
		return
	}
	target, err := parseProbeTarget(m.cfg.Type, q.Get("target"))
	if err != nil {
		http.Error(w, fmt.Sprintf("target parameter: %v", err), http.StatusBadRequest)
		return
	}
	if !m.cfg.allows(target) {
		http.Error(w, fmt.Sprintf("target %q is not allowed by module %q: its host matches none of the module's allowed_targets", target.String(), name), http.StatusBadRequest)
		return
	}

	timeout := scrapeTimeout(r.Header, scrapeCfg)
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	entry, err := e.probes.acquire(ctx, m.key+"\x00"+target.String(), m.key, m.cost, func() (Collector, error) { return m.build(target) })
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errProbeCapacity) {
			status = http.StatusServiceUnavailable
		}
		e.logger.Warn("probe refused", "module", name, "target", target.String(), "err", err)
		http.Error(w, err.Error(), status)
		return
	}
	collectors := []Collector{namedCollector{Collector: entry.collector, name: "probe/" + name}}
	// The pool stays reserved until every collector returned.
	f, shared := entry.coalesce.scrape(ctx, nil, deadline, e.logger, collectors, func() { e.probes.release(entry) })
	if shared {
		e.sharedProbes.Add(1)
	}
	if f == nil {
		return // the scraper hung up
	}
	f.respond(w, r, func(w http.ResponseWriter, r *http.Request) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(scrapeResult{metrics: f.metrics, timeout: timeout})
		e.serve(w, r, reg)
	})
}
