package remediator

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestClaimsLeftWithoutOutcomeAreRecordedAsInterrupted(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	policy := restartPolicy(ns, "")
	clock := newTestClock()
	store := &leaseStore{kube: kube, identity: "seed"}
	claimFor := func(deployment, fp, holder string, at time.Time) {
		t.Helper()
		tgt := target{Kind: "deployment", Namespace: ns, Name: deployment}
		err := store.update(context.Background(), tgt, func(st *targetState) bool {
			v := claim(st, claimInput{Occ: occurrence{Key: occurrenceKey(fp, at, "restart"), Fingerprint: fp, Holder: holder},
				Now: at, Cooldown: time.Second, Breaker: BreakerConfig{Failures: 3, Refires: 5, Window: time.Hour, OpenFor: time.Hour}, RateOK: true})
			return v.Write
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// This replica crashed between claim and outcome a moment ago ...
	claimFor("auth-service", "crash", "replica-1/abcd1234", clock.Now())
	// ... and another replica's claim is older than any action timeout.
	claimFor("policy-service", "stuck", "replica-2/efgh5678", clock.Now().Add(-time.Hour))
	// A claim of another replica still within its timeout is left alone.
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) {
		o.Identity = "replica-1"
		o.Now = clock.Now
	})
	testenv.WaitFor(t, time.Minute, "both claims recorded as interrupted", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "interrupted")) == 2
	})
	for _, d := range []string{"auth-service", "policy-service"} {
		st, err := store.read(context.Background(), target{Kind: "deployment", Namespace: ns, Name: d})
		if err != nil {
			t.Fatal(err)
		}
		if st.LastOutcome != "interrupted" {
			t.Errorf("%s: last outcome %q, want interrupted", d, st.LastOutcome)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "two RemediationInterrupted events", func() bool {
		return countEvents(t, kube, ns, "RemediationInterrupted") == 2
	})
	if n := logsOf(t).count("outcome=interrupted"); n != 2 {
		t.Errorf("%d audit lines with outcome=interrupted, want 2", n)
	}
}
