package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/demo"
	"github.com/warden-sre/warden/remediator"
)

// checkSimulationMatchesLive simulates the remediators' policy over the
// scenario's time range, from the same Prometheus's ALERTS history, and
// checks that it takes the actions the live remediators took: the same
// (target, action) pairs, each within one evaluation interval of the live
// action when the live action came with the alert's first delivery, and
// within two repeat intervals when it came with a repeat: when
// Alertmanager repeated is not in the history (its repeats drift by up to
// a group interval each), so the simulation may act one repeat earlier or
// later. A simulated action the live
// replicas refused for a gate the simulation cannot evaluate (a rollout,
// without --kubeconfig), or that waits for an approval the on-call denied,
// is allowed. A second run is byte-identical.
func checkSimulationMatchesLive(ctx context.Context, t *testing.T, env *demo.Env, from time.Time) {
	to := time.Now()
	policy, err := remediator.LoadPolicy(env.PolicyFile())
	if err != nil {
		t.Fatal(err)
	}
	step, err := remediator.EvaluationInterval(ctx, nil, env.Prometheus.URL)
	if err != nil {
		t.Fatal(err)
	}
	groupWait, repeat := env.AlertmanagerTiming()
	approvalExpiry := policy.Approvals.ExpireAfter
	run := func() (*remediator.SimReport, []byte) {
		periods, err := remediator.QueryAlertHistory(ctx, nil, env.Prometheus.URL, from, to, step)
		if err != nil {
			t.Fatal(err)
		}
		in := remediator.SimulationInput{
			Periods:       periods,
			Notifications: remediator.NotificationsFromPeriods(periods, from, to, remediator.DeliveryModel{GroupWait: groupWait, RepeatInterval: repeat}),
		}
		rep, err := remediator.Simulate(ctx, policy, in, remediator.SimulateOptions{From: from, To: to, Source: "e2e"})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := rep.Write(&b, remediator.SimOutputText); err != nil {
			t.Fatal(err)
		}
		return rep, b.Bytes()
	}
	rep, text := run()
	if _, again := run(); !bytes.Equal(text, again) {
		t.Errorf("a second simulation differs:\n%s\n----\n%s", text, again)
	}
	t.Logf("simulation of the scenario:\n%s", text)

	type action struct {
		key      string // target and action
		at       time.Time
		startsAt time.Time
		approval bool // simulated: waits for a person, so live comes later
	}
	var live, sim []action
	for _, d := range env.Decisions(func(d demo.Decision) bool { return d.Outcome == "acted" && !d.Time.After(to) }) {
		live = append(live, action{key: d.Target + " " + d.Action, at: d.Time, startsAt: d.StartsAt})
	}
	for _, a := range rep.Actions {
		sim = append(sim, action{a.Target + " " + a.Action, a.Time, a.StartsAt, a.ApprovalRequired})
	}
	if len(live) == 0 {
		t.Fatal("the live remediators took no action in the scenario")
	}
	// Refusals the simulation cannot reproduce without the cluster's
	// past state.
	unknowable := env.Decisions(func(d demo.Decision) bool {
		return d.Reason == remediator.ReasonRolloutInProgress || d.Reason == remediator.ReasonRecentRollout
	})
	for _, l := range live {
		tolerance := step
		if l.at.Sub(l.startsAt) >= repeat {
			tolerance = 2 * repeat
		}
		found := -1
		for i, s := range sim {
			// An approved action runs when the on-call approves: after
			// the proposal, within the approval's expiry.
			if s.key == l.key && s.approval && !l.at.Before(s.at.Add(-step)) && l.at.Sub(s.at) <= approvalExpiry {
				found = i
				break
			}
			if s.key == l.key && !s.approval && absDuration(s.at.Sub(l.at)) <= tolerance {
				found = i
				break
			}
		}
		if found < 0 {
			t.Errorf("live action %s at %s (alert fired %s): no simulated action within %s", l.key, l.at.Format(time.RFC3339Nano), l.startsAt.Format(time.RFC3339Nano), tolerance)
			continue
		}
		t.Logf("live %s at %s, simulated at %s (%s apart)", l.key, l.at.Format(time.RFC3339Nano), sim[found].at.Format(time.RFC3339Nano), absDuration(sim[found].at.Sub(l.at)))
		sim = append(sim[:found], sim[found+1:]...)
	}
	// Proposals the on-call denied: the simulation proposes them too, but
	// cannot know what a person will decide.
	approvals, err := remediator.ListApprovals(ctx, env.Kube.Client, []string{demo.Namespace}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sim {
		explained := false
		for _, d := range unknowable {
			if strings.HasPrefix(s.key, d.Target+" ") && absDuration(d.StartsAt.Sub(s.startsAt)) < step {
				explained = true
			}
		}
		for _, a := range approvals {
			if s.approval && a.Decision == remediator.DecisionDenied && s.key == a.Target+" "+string(a.Action) &&
				absDuration(a.Alert.StartsAt.Sub(s.startsAt)) < step {
				t.Logf("simulated %s at %s: the on-call denied it (approval %s, by %s)", s.key, s.at.Format(time.RFC3339Nano), a.ID, a.Approver)
				explained = true
			}
		}
		if !explained {
			t.Errorf("simulated action %s at %s: the live remediators took no such action", s.key, s.at.Format(time.RFC3339Nano))
		}
	}
	if t.Failed() {
		keys := make([]string, 0, len(live))
		for _, l := range live {
			keys = append(keys, fmt.Sprintf("%s@%s", l.key, l.at.Format("15:04:05.000")))
		}
		sort.Strings(keys)
		t.Logf("live actions: %s", strings.Join(keys, ", "))
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
