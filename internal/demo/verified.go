package demo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// Verifications returns the verification outcomes of the remediators'
// actions so far.
func (e *Env) Verifications() []Verification { return e.decisions.listVerifications() }

// CheckActionsVerified waits until every action the remediators took has
// its verification outcome on the timeline (each is decided within
// verify.window of the action), and returns them as the timeline shows
// them ("restart deployment/auth-service: effective after 7s").
func (e *Env) CheckActionsVerified(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.verifyWindow()+2*e.opts.RepeatInterval+time.Minute)
	defer cancel()
	acted := e.Decisions(func(d Decision) bool { return d.Outcome == "acted" })
	if len(acted) == 0 {
		return nil, fmt.Errorf("no action in the scenario")
	}
	var missing []string
	err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		missing = missing[:0]
		vs := e.Verifications()
		for _, d := range acted {
			if !slices.ContainsFunc(vs, func(v Verification) bool { return v.Of(d) }) {
				missing = append(missing, describeDecision(d))
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("actions without a verification outcome: %s: %w", strings.Join(missing, "; "), err)
	}
	var out []string
	vs := e.Verifications()
	for _, d := range acted {
		i := slices.IndexFunc(vs, func(v Verification) bool { return v.Of(d) })
		line := fmt.Sprintf("%s %s %s (%s): %s", d.Alertname, d.Action, d.Target, d.Replica, vs[i].OutcomeText())
		e.tl.Printf("CHECK", "%s", line)
		out = append(out, line)
	}
	return out, nil
}
