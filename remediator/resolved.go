package remediator

import "time"

// ReasonResolvedBeforeAction: the alert's resolved notification arrived
// before its firing delivery got to act (the firing job was delayed, for
// example while the API server was unreachable). The resolution wins.
const ReasonResolvedBeforeAction = "resolved_before_action"

// alertOccurrence identifies one firing of one alert, whatever the action.
func alertOccurrence(fingerprint string, startsAt time.Time) string {
	return fingerprint + "@" + startsAt.UTC().Format(time.RFC3339Nano)
}

// resolveOccurrence records a resolved notification for occ in st. An
// earlier action for the alert is closed out (changed); when nothing was
// done for this occurrence yet, a marker is stored so that a firing
// delivery of it still waiting (on this or another replica) is dropped
// (early).
func resolveOccurrence(st *targetState, occ occurrence, now time.Time) (changed, early bool) {
	for i := range st.Occurrences {
		if st.Occurrences[i].Key == occ.Key {
			if st.Occurrences[i].Resolved {
				return false, false
			}
			st.Occurrences[i].Resolved = true
			return true, false
		}
	}
	if resolve(st, occ.Fingerprint) {
		return true, false
	}
	occ.At, occ.Resolved, occ.Outcome, occ.Pod = now, true, ReasonResolvedBeforeAction, ""
	st.Occurrences = append(st.Occurrences, occ)
	if n := len(st.Occurrences); n > maxOccurrences {
		st.Occurrences = append([]occurrence(nil), st.Occurrences[n-maxOccurrences:]...)
	}
	return true, true
}

// resolvedEarly reports whether the occurrence was resolved before it was
// acted on, according to st.
func resolvedEarly(st *targetState, key string) bool {
	for _, o := range st.Occurrences {
		if o.Key == key && o.Outcome == ReasonResolvedBeforeAction {
			return true
		}
	}
	return false
}

// recorded reports whether st holds the occurrence key at all (claimed,
// acted, failed or resolved early).
func recorded(st *targetState, key string) bool {
	for _, o := range st.Occurrences {
		if o.Key == key {
			return true
		}
	}
	return false
}

// has reports whether k is in the set.
func (s *seenSet) has(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.set[k]
	return ok
}
