package remediator

import (
	"fmt"
	"time"
)

// maxOccurrences bounds the remembered occurrence keys per target. A
// delivery of an occurrence older than the last maxOccurrences actions on
// the target falls back to the cooldown check.
const maxOccurrences = 32

// occurrence identifies one firing of one alert for one action: Alertmanager
// repeats, retries and HA peers all carry the same fingerprint and startsAt.
type occurrence struct {
	Key         string `json:"key"`
	Fingerprint string `json:"fp"`
	Pod         string `json:"pod,omitempty"`
	// Holder names the claim (replica identity and a per-job id), so that
	// a job whose claim write landed but whose reply was lost recognises
	// its own claim when it retries.
	Holder string `json:"holder,omitempty"`
	// At is when the action was claimed.
	At       time.Time `json:"at"`
	Resolved bool      `json:"resolved,omitempty"`
	Outcome  string    `json:"outcome,omitempty"`
	// RecoveredAfter is, for an effective action, how many seconds after
	// it the alert stopped firing.
	RecoveredAfter int64 `json:"recovered_after_s,omitempty"`
}

func occurrenceKey(fingerprint string, startsAt time.Time, action string) string {
	return fingerprint + "@" + startsAt.UTC().Format(time.RFC3339Nano) + "/" + action
}

// targetState is what the coordination store remembers about one target.
type targetState struct {
	Occurrences      []occurrence
	LastActionAt     time.Time
	LastOutcome      string
	Failures         int
	Refires          int
	WindowStart      time.Time
	BreakerOpenUntil time.Time
}

// verdict is the result of claim.
type verdict struct {
	Proceed bool
	Reason  string // skip reason when !Proceed
	Detail  string
	// Write: the state changed and must be stored.
	Write bool
	// Opened: this decision opened the breaker (escalate once it is stored).
	Opened bool
	// BreakerOpen is the breaker state after the decision.
	BreakerOpen bool
	// RecentlyRecycled counts pods of the workload recycled within the
	// cooldown (recycle only).
	RecentlyRecycled int
}

// claimInput is everything claim needs besides the stored state.
type claimInput struct {
	Occ      occurrence
	Recycle  bool
	Now      time.Time
	Cooldown time.Duration
	Breaker  BreakerConfig
	RateOK   bool
}

// claim decides whether the occurrence may act on the target and, if so,
// records the claim in st. It is pure: the caller stores st only when
// verdict.Write is set, through a conditional write, so that of several
// replicas deciding on the same state exactly one claim is stored.
func claim(st *targetState, in claimInput) verdict {
	now := in.Now
	for _, o := range st.Occurrences {
		if o.Key == in.Occ.Key {
			if ownClaim(o, in.Occ) {
				return verdict{Proceed: true, RecentlyRecycled: recentRecycles(st, in), BreakerOpen: now.Before(st.BreakerOpenUntil)}
			}
			return verdict{Reason: ReasonDuplicate, Detail: "occurrence already handled at " + o.At.UTC().Format(time.RFC3339), BreakerOpen: now.Before(st.BreakerOpenUntil)}
		}
	}
	var v verdict
	if !st.BreakerOpenUntil.IsZero() {
		if now.Before(st.BreakerOpenUntil) {
			return verdict{Reason: ReasonBreakerOpen, Detail: "circuit breaker open until " + st.BreakerOpenUntil.UTC().Format(time.RFC3339), BreakerOpen: true}
		}
		// Half-open: the breaker expired; the next action is a trial,
		// and one failure of it opens the breaker again.
		st.BreakerOpenUntil = time.Time{}
		st.Failures, st.Refires = max(in.Breaker.Failures-1, 0), 0
		st.WindowStart = now
		v.Write = true
	}
	if st.WindowStart.IsZero() || now.Sub(st.WindowStart) > in.Breaker.Window {
		st.WindowStart = now
		st.Failures, st.Refires = 0, 0
		v.Write = true
	}
	if in.Recycle {
		for _, o := range st.Occurrences {
			if o.Pod == "" || !mayHaveEvicted(o.Outcome) || now.Sub(o.At) >= in.Cooldown {
				continue
			}
			if o.Pod == in.Occ.Pod {
				v.Reason, v.Detail = ReasonCooldown, fmt.Sprintf("pod %s recycled %s ago (cooldown %s)", o.Pod, now.Sub(o.At).Round(time.Second), in.Cooldown)
				return v
			}
			v.RecentlyRecycled++
		}
	} else if !st.LastActionAt.IsZero() && now.Sub(st.LastActionAt) < in.Cooldown {
		v.Reason, v.Detail = ReasonCooldown, fmt.Sprintf("last action %s ago (cooldown %s)", now.Sub(st.LastActionAt).Round(time.Second), in.Cooldown)
		return v
	}
	if !in.RateOK {
		v.Reason, v.Detail = ReasonRateLimited, "global action rate limit reached"
		return v
	}
	for _, o := range st.Occurrences {
		if o.Fingerprint == in.Occ.Fingerprint && o.Outcome != ReasonResolvedBeforeAction && now.Sub(o.At) <= in.Breaker.Window {
			// The same alert fires again after it was remediated: the fix
			// is not holding. Counted here, once the occurrence passed
			// every other check, so that only the delivery that claims a
			// new occurrence counts, never a refused one.
			st.Refires++
			v.Write = true
			if st.Refires >= in.Breaker.Refires {
				st.BreakerOpenUntil = now.Add(in.Breaker.OpenFor)
				v.Reason = ReasonBreakerOpen
				v.Detail = fmt.Sprintf("alert fired again %d times after remediation within %s", st.Refires, in.Breaker.Window)
				v.Opened, v.BreakerOpen = true, true
				return v
			}
			break
		}
	}
	occ := in.Occ
	occ.At = now
	st.Occurrences = append(st.Occurrences, occ)
	if n := len(st.Occurrences); n > maxOccurrences {
		st.Occurrences = append([]occurrence(nil), st.Occurrences[n-maxOccurrences:]...)
	}
	if !in.Recycle {
		st.LastActionAt = now
	}
	st.LastOutcome = "claimed"
	v.Proceed, v.Write = true, true
	return v
}

// finish records the outcome of an action that claim allowed. It returns
// true when this failure opened the breaker.
func finish(st *targetState, key, outcome string, now time.Time, b BreakerConfig) (opened bool) {
	for i := range st.Occurrences {
		if st.Occurrences[i].Key == key {
			st.Occurrences[i].Outcome = outcome
		}
	}
	st.LastOutcome = outcome
	switch outcome {
	case outcomeActed:
		st.Failures = 0
	case outcomeFailed:
		if st.WindowStart.IsZero() || now.Sub(st.WindowStart) > b.Window {
			st.WindowStart = now
			st.Failures, st.Refires = 0, 0
		}
		st.Failures++
		if st.Failures >= b.Failures && !now.Before(st.BreakerOpenUntil) {
			st.BreakerOpenUntil = now.Add(b.OpenFor)
			return true
		}
	}
	return false
}

// resolve marks the latest action for the alert as resolved. It returns
// false when there is nothing to record.
func resolve(st *targetState, fingerprint string) bool {
	for i := len(st.Occurrences) - 1; i >= 0; i-- {
		o := &st.Occurrences[i]
		if o.Fingerprint != fingerprint {
			continue
		}
		if o.Resolved {
			return false
		}
		o.Resolved = true
		return true
	}
	return false
}
