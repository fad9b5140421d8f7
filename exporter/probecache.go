package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	probeTargetsDesc = prometheus.NewDesc(
		"warden_exporter_probe_targets",
		"Probed targets whose collector (and connection pool) is kept between probes.",
		nil, nil)
	probeConnsReservedDesc = prometheus.NewDesc(
		"warden_exporter_probe_connections_reserved",
		"Connections the kept pools of probed targets may hold: the sum of their caps, including pools evicted but still in use by a probe.",
		nil, nil)
	probeConnsLimitDesc = prometheus.NewDesc(
		"warden_exporter_probe_connections_limit",
		"The cap on connections held for probed targets (probe.max_connections).",
		nil, nil)
	probeEvictionsDesc = prometheus.NewDesc(
		"warden_exporter_probe_evictions_total",
		"Probed targets whose pool was closed, by reason: idle (not probed for probe.idle_timeout), capacity (room for another target within probe.max_connections or probe.max_targets), reload (its module changed or went away).",
		[]string{"reason"}, nil)
	probeCapacityWaitsDesc = prometheus.NewDesc(
		"warden_exporter_probe_capacity_exhausted_total",
		"Probes refused (503) because every connection of probe.max_connections was held by targets being probed until the probe's deadline.",
		nil, nil)
)

const (
	evictIdle     = "idle"
	evictCapacity = "capacity"
	evictReload   = "reload"
)

// errProbeCapacity is returned when no room could be made for a target's
// pool before the probe's deadline.
var errProbeCapacity = errors.New("probe capacity exhausted")

// probeEntry is the collector of one (module, target) with its pool, and
// the collection its probes share while one is in flight.
type probeEntry struct {
	key       string
	module    string // module key
	collector Collector
	// cost is the connections the collector may hold; reserved from
	// creation until it is closed.
	cost     int
	coalesce coalescer

	// Guarded by the cache's lock.
	refs     int
	lastUsed time.Time
	evicted  bool
}

// probeCache keeps the collectors of probed targets in a bounded LRU. The
// sum of the connection caps of every collector not yet closed never
// exceeds the limit: a new target first evicts the least recently used
// idle ones, and waits (until its deadline) when all the room is held by
// targets being probed. An evicted collector in use is closed when its
// last probe ends. A target not probed for the idle timeout is closed by a
// sweep, so a target that disappears releases its connections.
type probeCache struct {
	logger *slog.Logger

	mu       sync.Mutex
	cfg      ProbeConfig
	lru      *simplelru.LRU[string, *probeEntry]
	reserved int
	// closing is the part of reserved whose collectors are evicted, idle
	// and about to be closed: room that is coming.
	closing int
	// changed is closed (and replaced) whenever room may have been freed.
	changed   chan struct{}
	sweep     *time.Timer
	closed    bool
	evictions map[string]uint64
	exhausted uint64
	// toClose collects collectors to close once the lock is released.
	toClose []*probeEntry
}

func newProbeCache(cfg ProbeConfig, logger *slog.Logger) *probeCache {
	c := &probeCache{
		logger:    logger,
		cfg:       cfg,
		changed:   make(chan struct{}),
		evictions: map[string]uint64{evictIdle: 0, evictCapacity: 0, evictReload: 0},
	}
	// The size bound is enforced by hand (evictOldestIdle), so that an
	// entry in use is never the one pushed out; the LRU only orders.
	c.lru, _ = simplelru.NewLRU[string, *probeEntry](1<<30, nil)
	return c
}

// acquire returns the entry for key, building its collector with build
// when it is not kept, after making room for cost connections. The caller
// must release it.
func (c *probeCache) acquire(ctx context.Context, key, module string, cost int, build func() (Collector, error)) (*probeEntry, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errors.New("exporter is shutting down")
		}
		if e, ok := c.lru.Get(key); ok {
			e.refs++
			e.lastUsed = time.Now()
			c.mu.Unlock()
			return e, nil
		}
		// Evict only what the new target needs: room already being
		// freed counts.
		for c.reserved-c.closing+cost > c.cfg.MaxConnections || c.lru.Len() >= c.cfg.MaxTargets {
			if !c.evictOldestIdle(evictCapacity) {
				break
			}
		}
		if c.reserved+cost <= c.cfg.MaxConnections && c.lru.Len() < c.cfg.MaxTargets {
			col, err := build()
			if err != nil {
				c.mu.Unlock()
				c.closePending()
				return nil, err
			}
			e := &probeEntry{key: key, module: module, collector: col, cost: cost, refs: 1, lastUsed: time.Now()}
			c.reserved += cost
			c.lru.Add(key, e)
			c.scheduleSweep()
			c.mu.Unlock()
			c.closePending()
			return e, nil
		}
		wait := c.changed
		c.mu.Unlock()
		c.closePending()
		select {
		case <-wait:
		case <-ctx.Done():
			c.mu.Lock()
			c.exhausted++
			held, targets := c.reserved, c.lru.Len()
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %d of probe.max_connections=%d held by %d targets being probed", errProbeCapacity, held, c.cfg.MaxConnections, targets)
		}
	}
}

// release ends one probe's use of e.
func (c *probeCache) release(e *probeEntry) {
	c.mu.Lock()
	e.refs--
	e.lastUsed = time.Now()
	if e.refs == 0 {
		if e.evicted {
			c.toClose = append(c.toClose, e)
			c.closing += e.cost
		}
		c.notify()
	}
	c.mu.Unlock()
	c.closePending()
}

// notify wakes the probes waiting for room. Called with the lock held.
func (c *probeCache) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// evictOldestIdle evicts the least recently used entry no probe is using;
// false when there is none. Called with the lock held.
func (c *probeCache) evictOldestIdle(reason string) bool {
	for _, k := range c.lru.Keys() {
		if e, _ := c.lru.Peek(k); e.refs == 0 {
			c.evict(e, reason)
			return true
		}
	}
	return false
}

// evict takes e out of the LRU; it is closed now when idle, otherwise by
// its last release. Called with the lock held.
func (c *probeCache) evict(e *probeEntry, reason string) {
	c.lru.Remove(e.key)
	e.evicted = true
	c.evictions[reason]++
	if e.refs == 0 {
		c.toClose = append(c.toClose, e)
		c.closing += e.cost
	}
}

// closePending closes the collectors evicted under the lock, then frees
// their room. Closing a pool waits for nothing: no probe uses it.
func (c *probeCache) closePending() {
	c.mu.Lock()
	pending := c.toClose
	c.toClose = nil
	c.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	for _, e := range pending {
		if cl, ok := e.collector.(io.Closer); ok {
			if err := cl.Close(); err != nil {
				c.logger.Warn("closing a probed target's collector", "target", e.key, "err", err)
			}
		}
	}
	c.mu.Lock()
	for _, e := range pending {
		c.reserved -= e.cost
		c.closing -= e.cost
	}
	c.notify()
	c.mu.Unlock()
}

// scheduleSweep arms the idle sweep while entries are kept. Called with
// the lock held.
func (c *probeCache) scheduleSweep() {
	if c.sweep != nil || c.closed || c.lru.Len() == 0 {
		return
	}
	// A quarter of the idle timeout: a target is closed at most 25 % late.
	c.sweep = time.AfterFunc(c.cfg.IdleTimeout/4, c.sweepIdle)
}

func (c *probeCache) sweepIdle() {
	c.mu.Lock()
	c.sweep = nil
	now := time.Now()
	for _, k := range c.lru.Keys() {
		e, _ := c.lru.Peek(k)
		if e.refs == 0 && now.Sub(e.lastUsed) >= c.cfg.IdleTimeout {
			c.evict(e, evictIdle)
		}
	}
	c.scheduleSweep()
	c.mu.Unlock()
	c.closePending()
}

// configure applies a (re)loaded configuration: the new limits, and the
// eviction of every target whose module is not in modules (changed or
// gone). Entries over a lowered limit are evicted while idle.
func (c *probeCache) configure(cfg ProbeConfig, modules map[string]bool) {
	c.mu.Lock()
	idleChanged := cfg.IdleTimeout != c.cfg.IdleTimeout
	c.cfg = cfg
	for _, k := range c.lru.Keys() {
		if e, _ := c.lru.Peek(k); !modules[e.module] {
			c.evict(e, evictReload)
		}
	}
	for c.reserved-c.closing > cfg.MaxConnections || c.lru.Len() > cfg.MaxTargets {
		if !c.evictOldestIdle(evictCapacity) {
			break
		}
	}
	if idleChanged && c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	c.scheduleSweep()
	c.notify()
	c.mu.Unlock()
	c.closePending()
}

// close evicts every entry (those in use close with their last probe) and
// refuses new probes.
func (c *probeCache) close() {
	c.mu.Lock()
	c.closed = true
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	for _, k := range c.lru.Keys() {
		e, _ := c.lru.Peek(k)
		c.evict(e, evictReload)
	}
	c.notify()
	c.mu.Unlock()
	c.closePending()
}

// collect sends the cache's own metrics.
func (c *probeCache) collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	targets, reserved, limit, exhausted := c.lru.Len(), c.reserved, c.cfg.MaxConnections, c.exhausted
	evictions := make(map[string]uint64, len(c.evictions))
	for k, v := range c.evictions {
		evictions[k] = v
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(probeTargetsDesc, prometheus.GaugeValue, float64(targets))
	ch <- prometheus.MustNewConstMetric(probeConnsReservedDesc, prometheus.GaugeValue, float64(reserved))
	ch <- prometheus.MustNewConstMetric(probeConnsLimitDesc, prometheus.GaugeValue, float64(limit))
	ch <- prometheus.MustNewConstMetric(probeCapacityWaitsDesc, prometheus.CounterValue, float64(exhausted))
	for _, reason := range []string{evictIdle, evictCapacity, evictReload} {
		ch <- prometheus.MustNewConstMetric(probeEvictionsDesc, prometheus.CounterValue, float64(evictions[reason]), reason)
	}
}
