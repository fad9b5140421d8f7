package remediator

import (
	"fmt"
	"testing"
	"time"
)

var testBreaker = BreakerConfig{Failures: 2, Refires: 2, Window: time.Hour, OpenFor: 30 * time.Minute}

func TestClaim(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	occ := func(fp string, startsAt time.Time) occurrence {
		return occurrence{Key: occurrenceKey(fp, startsAt, "restart"), Fingerprint: fp}
	}
	type step struct {
		occ     occurrence
		at      time.Duration // after t0
		rateOK  bool
		recycle bool
		pod     string
		want    string // "act" or a skip reason
		opened  bool
	}
	first := occ("aaaa", t0)
	tests := []struct {
		name  string
		steps []step
	}{
		{"same occurrence acts once", []step{
			{occ: first, rateOK: true, want: "act"},
			{occ: first, at: time.Second, rateOK: true, want: ReasonDuplicate},
			{occ: first, at: 3 * time.Hour, rateOK: true, want: ReasonDuplicate},
		}},
		{"new occurrence within cooldown is skipped", []step{
			{occ: first, rateOK: true, want: "act"},
			{occ: occ("bbbb", t0.Add(time.Minute)), at: 5 * time.Minute, rateOK: true, want: ReasonCooldown},
			{occ: occ("bbbb", t0.Add(time.Minute)), at: 11 * time.Minute, rateOK: true, want: "act"},
		}},
		{"refires open the breaker", []step{
			{occ: first, rateOK: true, want: "act"},
			{occ: occ("aaaa", t0.Add(15*time.Minute)), at: 15 * time.Minute, rateOK: true, want: "act"},
			{occ: occ("aaaa", t0.Add(30*time.Minute)), at: 30 * time.Minute, rateOK: true, want: ReasonBreakerOpen, opened: true},
			{occ: occ("cccc", t0.Add(45*time.Minute)), at: 45 * time.Minute, rateOK: true, want: ReasonBreakerOpen},
			// open_for (30m) has passed: half-open, a new trial is allowed
			{occ: occ("cccc", t0.Add(61*time.Minute)), at: 61 * time.Minute, rateOK: true, want: "act"},
		}},
		{"rate limit is checked after dedupe and cooldown", []step{
			{occ: first, rateOK: false, want: ReasonRateLimited},
			{occ: first, at: time.Second, rateOK: true, want: "act"},
			{occ: first, at: 2 * time.Second, rateOK: false, want: ReasonDuplicate},
		}},
		{"recycle cooldown is per pod", []step{
			{occ: first, rateOK: true, recycle: true, pod: "p1", want: "act"},
			{occ: occ("bbbb", t0), at: time.Minute, rateOK: true, recycle: true, pod: "p2", want: "act"},
			{occ: occ("dddd", t0), at: 2 * time.Minute, rateOK: true, recycle: true, pod: "p1", want: ReasonCooldown},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st targetState
			for i, s := range tc.steps {
				o := s.occ
				o.Pod = s.pod
				if s.recycle {
					o.Key += "/" + s.pod
				}
				// Round-trip through the stored form, as the stores do.
				decoded, err := decodeState(st.encode(target{Kind: "deployment", Name: "d"}))
				if err != nil {
					t.Fatalf("step %d: decode: %v", i, err)
				}
				st = decoded
				v := claim(&st, claimInput{Occ: o, Recycle: s.recycle, Now: t0.Add(s.at), Cooldown: 10 * time.Minute, Breaker: testBreaker, RateOK: s.rateOK})
				got := v.Reason
				if v.Proceed {
					got = "act"
				}
				if got != s.want || v.Opened != s.opened {
					t.Fatalf("step %d: got %s (opened %v, %s), want %s (opened %v)", i, got, v.Opened, v.Detail, s.want, s.opened)
				}
			}
		})
	}
}

func TestClaimCountsRecentRecycles(t *testing.T) {
	t0 := time.Now()
	var st targetState
	for i, pod := range []string{"p1", "p2", "p3"} {
		v := claim(&st, claimInput{Occ: occurrence{Key: "k" + pod, Fingerprint: "f" + pod, Pod: pod}, Recycle: true, Now: t0.Add(time.Duration(i) * time.Minute), Cooldown: 10 * time.Minute, Breaker: testBreaker, RateOK: true})
		if !v.Proceed || v.RecentlyRecycled != i {
			t.Fatalf("recycle %s: proceed %v, recently recycled %d, want %d", pod, v.Proceed, v.RecentlyRecycled, i)
		}
	}
}

func TestFinishOpensBreakerAfterFailures(t *testing.T) {
	t0 := time.Now()
	var st targetState
	if finish(&st, "k1", outcomeFailed, t0, testBreaker) {
		t.Fatal("breaker opened after one failure")
	}
	if finish(&st, "k2", outcomeActed, t0.Add(time.Minute), testBreaker) || st.Failures != 0 {
		t.Fatalf("success must reset failures, got %d", st.Failures)
	}
	finish(&st, "k3", outcomeFailed, t0.Add(2*time.Minute), testBreaker)
	if !finish(&st, "k4", outcomeFailed, t0.Add(3*time.Minute), testBreaker) {
		t.Fatal("breaker did not open after two consecutive failures")
	}
	if !st.BreakerOpenUntil.Equal(t0.Add(3*time.Minute + testBreaker.OpenFor)) {
		t.Fatalf("breaker open until %s", st.BreakerOpenUntil)
	}
	if finish(&st, "k5", outcomeFailed, t0.Add(4*time.Minute), testBreaker) {
		t.Fatal("an open breaker must not open (and escalate) again")
	}
}

func TestResolveClosesOutOnce(t *testing.T) {
	var st targetState
	claim(&st, claimInput{Occ: occurrence{Key: "k", Fingerprint: "f"}, Now: time.Now(), Breaker: testBreaker, RateOK: true})
	if !resolve(&st, "f") {
		t.Fatal("first resolve did not change state")
	}
	if resolve(&st, "f") || resolve(&st, "other") {
		t.Fatal("repeated or unknown resolve changed state")
	}
}

func TestOccurrenceHistoryIsBounded(t *testing.T) {
	var st targetState
	t0 := time.Now()
	for i := range maxOccurrences + 10 {
		claim(&st, claimInput{Occ: occurrence{Key: fmt.Sprint(i), Fingerprint: fmt.Sprint(i)}, Now: t0.Add(time.Duration(i) * time.Hour), Breaker: testBreaker, RateOK: true})
	}
	if len(st.Occurrences) != maxOccurrences || st.Occurrences[maxOccurrences-1].Key != fmt.Sprint(maxOccurrences+9) {
		t.Fatalf("history has %d entries", len(st.Occurrences))
	}
}

func TestHalfOpenTrialReopensOnOneFailure(t *testing.T) {
	t0 := time.Now()
	var st targetState
	finish(&st, "k1", outcomeFailed, t0, testBreaker)
	if !finish(&st, "k2", outcomeFailed, t0.Add(time.Minute), testBreaker) {
		t.Fatal("breaker did not open")
	}
	trial := t0.Add(time.Minute + testBreaker.OpenFor + time.Second)
	v := claim(&st, claimInput{Occ: occurrence{Key: "k3", Fingerprint: "f3"}, Now: trial, Breaker: testBreaker, RateOK: true})
	if !v.Proceed {
		t.Fatalf("half-open breaker refused the trial: %s", v.Reason)
	}
	if !finish(&st, "k3", outcomeFailed, trial, testBreaker) {
		t.Fatal("a failed trial did not open the breaker again")
	}
}
