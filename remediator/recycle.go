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
