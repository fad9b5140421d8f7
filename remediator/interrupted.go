package remediator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/warden-sre/warden/remediator/actions"
)

// outcomeInterrupted: an action was claimed but its outcome was never
// recorded: the replica stopped (crash, eviction, shutdown grace period
// over) or the job outlived its timeout. Whether the action happened is
// unknown, so a person has to look.
const outcomeInterrupted = "interrupted"

// interruptedMargin is added to the longest action timeout before a claim
// without outcome counts as interrupted: recording the outcome takes a
// moment after the action ends.
const interruptedMargin = time.Minute

// interruptedClaims returns the indexes of the occurrences in st that were
// claimed and never finished, and either belong to an earlier process of
// this replica (previous: the holder prefix "<identity>/" of this replica,
// current: the prefix of this process) or are older than maxAge.
func interruptedClaims(st *targetState, now time.Time, maxAge time.Duration, previous, current string) []int {
	var idx []int
	for i, o := range st.Occurrences {
		if o.Outcome != "" {
			continue
		}
		earlierProcess := previous != "" && strings.HasPrefix(o.Holder, previous) && !strings.HasPrefix(o.Holder, current)
		if earlierProcess || now.Sub(o.At) > maxAge {
			idx = append(idx, i)
		}
	}
	return idx
}

// maxActionTimeout is the longest time an action of the policy may take.
func (p *Policy) maxActionTimeout() time.Duration {
	d := p.Defaults.Timeout
	for _, r := range p.Rules {
		d = max(d, r.Timeout)
	}
	return d
}

// sweepInterrupted records the claims of t that will never get an outcome
// as interrupted: in the store, and as an audit record each (log line,
// metric, Event). st is the state last read, used to skip the write when
// there is nothing to do.
func (r *Remediator) sweepInterrupted(ctx context.Context, p *Policy, store stateStore, t target, st targetState) {
	maxAge := p.maxActionTimeout() + interruptedMargin
	previous, current := r.identity+"/", r.holderPrefix
	if len(interruptedClaims(&st, r.now(), maxAge, previous, current)) == 0 {
		return
	}
	var found []occurrence
	err := store.update(ctx, t, func(st *targetState) bool {
		found = found[:0]
		for _, i := range interruptedClaims(st, r.now(), maxAge, previous, current) {
			st.Occurrences[i].Outcome = outcomeInterrupted
			found = append(found, st.Occurrences[i])
		}
		if len(found) > 0 && st.LastOutcome == "claimed" {
			st.LastOutcome = outcomeInterrupted
		}
		return len(found) > 0
	})
	if err != nil {
		r.logger.Warn("cannot record interrupted actions", "target", t.String(), "namespace", t.Namespace, "err", err)
		return
	}
	for _, o := range found {
		action := o.Key[strings.LastIndexByte(o.Key, '/')+1:]
		r.audit(ctx, record{
			Fingerprint: o.Fingerprint,
			Action:      actions.Kind(action),
			Target:      t,
			Outcome:     outcomeInterrupted,
			Detail: fmt.Sprintf("claimed at %s by %s, but no outcome was recorded (the replica stopped or the action outlived its timeout): check the target",
				o.At.UTC().Format(time.RFC3339), o.Holder),
		})
	}
}
