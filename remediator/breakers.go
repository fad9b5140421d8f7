package remediator

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// breakerRefreshInterval is how often the target states are re-read from
// the stores, so that a breaker opened by another replica (or before a
// restart) shows in this replica's warden_remediator_breaker_open, and a
// claim left without outcome is found.
const breakerRefreshInterval = 30 * time.Second

// leaseSelector selects the remediator's coordination Leases.
const leaseSelector = "app.kubernetes.io/managed-by=warden-remediator"

type breakerKey struct{ namespace, target string }

// breakerStates is warden_remediator_breaker_open, derived from the stored
// breaker-open-until of each target: the value is computed at scrape time,
// so the series goes to 0 when open_for has passed, without any alert.
type breakerStates struct {
	mu   sync.Mutex
	now  func() time.Time
	open map[breakerKey]time.Time
	desc *prometheus.Desc
}

func newBreakerStates(now func() time.Time) *breakerStates {
	return &breakerStates{
		now:  now,
		open: map[breakerKey]time.Time{},
		desc: prometheus.NewDesc("warden_remediator_breaker_open",
			"1 while the circuit breaker of a target is open (no more actions; escalated to Level 2), 0 when closed.",
			[]string{"namespace", "target"}, nil),
	}
}

// set records the stored breaker-open-until of t (zero: closed).
func (b *breakerStates) set(t target, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open[breakerKey{t.Namespace, t.String()}] = until
}

func (b *breakerStates) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *breakerStates) Collect(ch chan<- prometheus.Metric) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, until := range b.open {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, boolGauge(now.Before(until)), k.namespace, k.target)
	}
}

// refreshBreakers reads the state of every target the policy may act on
// from its store (the Leases in the allowlisted namespaces, from the Lease
// cache once synced, and the records of the enabled Redis targets): the breaker gauge, and claims that will
// never get an outcome (sweepInterrupted). Errors are logged; the previous
// values stay.
func (r *Remediator) refreshBreakers(ctx context.Context) {
	snap := r.acquireSnapshot()
	defer snap.users.Done()
	for _, ns := range snap.policy.namespaces() {
		states, err := r.leases.states(ctx, ns)
		if err != nil {
			r.logger.Warn("cannot read breaker states", "namespace", ns, "err", err)
			continue
		}
		for _, ls := range states {
			if ls.err != nil {
				continue
			}
			r.metrics.breakerOpen.set(ls.target, ls.state.BreakerOpenUntil)
			r.sweepInterrupted(ctx, snap.policy, r.leases, ls.target, ls.state)
		}
	}
	for name, s := range snap.redis {
		t := target{Kind: "redis", Name: name}
		st, err := s.read(ctx, t)
		if err != nil {
			r.logger.Warn("cannot read breaker state", "target", t.String(), "err", err)
			continue
		}
		r.metrics.breakerOpen.set(t, st.BreakerOpenUntil)
		r.sweepInterrupted(ctx, snap.policy, s, t, st)
	}
}

// namespaces lists the allowlisted namespaces of every rule, once each.
func (p *Policy) namespaces() []string {
	var out []string
	for _, rule := range p.Rules {
		for _, ns := range rule.Allow.Namespaces {
			if !slices.Contains(out, ns) {
				out = append(out, ns)
			}
		}
	}
	return out
}

// parseTarget reads the warden.io/target annotation ("<kind>/<name>").
func parseTarget(namespace, s string) (target, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			if i == 0 || i == len(s)-1 {
				return target{}, false
			}
			return target{Kind: s[:i], Namespace: namespace, Name: s[i+1:]}, true
		}
	}
	return target{}, false
}

// watchBreakers refreshes the breaker states now and every interval until
// ctx ends.
func (r *Remediator) watchBreakers(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		r.refreshBreakers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
