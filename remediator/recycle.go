package remediator

// ReasonBlastRadius: recycling one more pod would exceed the rule's
// max_fraction of the workload's pods within the cooldown.
const ReasonBlastRadius = "blast_radius"

// mayHaveEvicted reports whether a recycle occurrence with this outcome may
// have evicted its pod, so that it counts towards the blast radius and the
// pod's cooldown: one in flight (no outcome yet), acted or interrupted
// does; one refused (opt-out, blast radius), failed or resolved before it
// acted did not.
func mayHaveEvicted(outcome string) bool {
	switch outcome {
	case ReasonOptedOut, ReasonBlastRadius, outcomeFailed, ReasonResolvedBeforeAction:
		return false
	}
	return true
}

// ownClaim reports whether stored is the claim this job wrote and has not
// finished: the write landed although its reply was lost.
func ownClaim(stored, occ occurrence) bool {
	return occ.Holder != "" && stored.Holder == occ.Holder && stored.Outcome == ""
}

// recentRecycles counts the other pods of the workload that may have been
// recycled within the cooldown, for a job that already holds its claim.
func recentRecycles(st *targetState, in claimInput) int {
	if !in.Recycle {
		return 0
	}
	n := 0
	for _, o := range st.Occurrences {
		if o.Key != in.Occ.Key && o.Pod != "" && mayHaveEvicted(o.Outcome) && in.Now.Sub(o.At) < in.Cooldown {
			n++
		}
	}
	return n
}
