package remediator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/kubernetes"
)

// The rate limit of the whole deployment lives in one Lease in the
// remediator's own namespace: a sliding window of the actions of every
// replica, written with optimistic concurrency like the target Leases.
const (
	rateLimitLease      = "warden-remediator-rate-limit"
	annoActions         = "warden.io/actions"
	rateLimitWindow     = time.Hour
	maxRateLimitEntries = 1000
)

// rateEntry is one action in the shared window.
type rateEntry struct {
	At        time.Time `json:"at"`
	Namespace string    `json:"ns,omitempty"`
	Target    string    `json:"target"`
	Key       string    `json:"key"`
}

// admitRate decides whether one more action fits the window, and records
// it in entries if so. It is pure, like claim. The second result explains
// a refusal.
func admitRate(entries []rateEntry, e rateEntry, rl RateLimitConfig) ([]rateEntry, string) {
	kept := entries[:0:0]
	for _, x := range entries {
		if e.At.Sub(x.At) < rateLimitWindow {
			kept = append(kept, x)
		}
	}
	if rl.ActionsPerHour > 0 && len(kept) >= rl.ActionsPerHour {
		return kept, fmt.Sprintf("rate_limit.actions_per_hour reached: %d actions by all replicas within the last hour", len(kept))
	}
	if rl.MaxTargetsPerNamespace > 0 && e.Namespace != "" {
		targets := map[string]bool{}
		for _, x := range kept {
			if x.Namespace == e.Namespace {
				targets[x.Target] = true
			}
		}
		if !targets[e.Target] && len(targets) >= rl.MaxTargetsPerNamespace {
			return kept, fmt.Sprintf("rate_limit.max_targets_per_namespace reached: %d targets in namespace %s acted on within the last hour", len(targets), e.Namespace)
		}
	}
	kept = append(kept, e)
	if n := len(kept); n > maxRateLimitEntries {
		kept = kept[n-maxRateLimitEntries:]
	}
	return kept, ""
}

// sharedLimit keeps the window in the Lease.
type sharedLimit struct {
	kube      kubernetes.Interface
	namespace string
	identity  string
}

// update reads the window, lets fn change it and writes it back unless
// another replica wrote in between, in which case it starts over.
func (s *sharedLimit) update(ctx context.Context, fn func([]rateEntry) ([]rateEntry, bool)) error {
	return updateLease(ctx, s.kube, nil, s.namespace, rateLimitLease, s.identity, func(l *coordinationv1.Lease) (bool, error) {
		var entries []rateEntry
		if v := l.Annotations[annoActions]; v != "" {
			if err := json.Unmarshal([]byte(v), &entries); err != nil {
				return false, fmt.Errorf("%s: %w: %w", annoActions, errCorruptState, err)
			}
		}
		next, write := fn(entries)
		if !write {
			return false, nil
		}
		b, _ := json.Marshal(next) // plain struct, cannot fail
		l.Annotations[annoActions] = string(b)
		return true, nil
	})
}

// reserveRate takes a slot of the rate limit for an action on d.Target.
// With a coordination namespace the slot is in the shared Lease, so the
// limit holds for all replicas together; it is taken only when the claim
// would otherwise go ahead, so that duplicate deliveries do not write it.
// cancel gives the slot back when the claim does not happen after all;
// detail explains a refusal.
func (r *Remediator) reserveRate(ctx context.Context, p *Policy, store stateStore, d decision, in claimInput) (ok bool, cancel func(), detail string, err error) {
	rl := p.RateLimit
	if r.shared == nil {
		ok, cancel = r.limiter.reserve(r.now())
		return ok, cancel, "", nil
	}
	nothing := func() {}
	if rl.ActionsPerHour == 0 && rl.MaxTargetsPerNamespace == 0 {
		return true, nothing, "", nil
	}
	st, err := r.readState(ctx, p, store, d.Target)
	if err != nil {
		return false, nothing, "", err
	}
	probe := in
	probe.Now, probe.RateOK = r.now(), true
	if v := claim(&st, probe); !v.Proceed {
		// The claim refuses for its own reason (duplicate, cooldown,
		// breaker); the rate limit does not matter.
		return true, nothing, "", nil
	}
	entry := rateEntry{At: r.now(), Namespace: d.Target.Namespace, Target: d.Target.String(), Key: in.Occ.Key}
	err = retryStore(ctx, p.Defaults.RetryFor, func() error {
		return r.shared.update(ctx, func(entries []rateEntry) ([]rateEntry, bool) {
			next, why := admitRate(entries, entry, rl)
			detail = why
			return next, why == ""
		})
	}, r.retryLogger(d.Target))
	if err != nil {
		return false, nothing, "", err
	}
	if detail != "" {
		return false, nothing, detail, nil
	}
	return true, func() {
		cerr := retryStore(ctx, p.Defaults.RetryFor, func() error {
			return r.shared.update(context.WithoutCancel(ctx), func(entries []rateEntry) ([]rateEntry, bool) {
				for i, x := range entries {
					if x.Key == entry.Key && x.At.Equal(entry.At) && x.Target == entry.Target {
						return append(entries[:i:i], entries[i+1:]...), true
					}
				}
				return entries, false
			})
		}, r.retryLogger(d.Target))
		if cerr != nil {
			r.logger.Warn("cannot give back a rate-limit slot; it expires within the hour", "target", d.Target.String(), "err", cerr)
		}
	}, "", nil
}
