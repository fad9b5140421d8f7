package remediator

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestRateLimitedDeliveriesDoNotCountAsRefires(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	policy := strings.NewReplacer("cooldown: 3s", "cooldown: 0s", "refires: 5", "refires: 2", "actions_per_hour: 0", "actions_per_hour: 1").Replace(restartPolicy(ns, ""))
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	// One action uses up the hour's budget; the alert then fires again
	// (a new occurrence) and is delivered three times.
	for i, a := range []int{0, 1, 1, 1} {
		al := firing("HighMemoryUsage", "feedbeef", t0.Add(time.Duration(a)*time.Minute), labels)
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(al), nil); code != 202 {
			t.Fatalf("post %d: %d", i, code)
		}
		testenv.WaitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonRateLimited)); got != 3 {
		t.Fatalf("rate_limited skips %v, want 3", got)
	}
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 0 {
		t.Fatalf("escalations = %v, want 0", got)
	}
	if n := logsOf(t).count("escalating to Level 2"); n != 0 {
		t.Fatalf("%d escalation log lines, want 0", n)
	}
	if n := countEvents(t, kube, ns, "RemediationEscalated"); n != 0 {
		t.Fatalf("%d RemediationEscalated events, want 0", n)
	}
	st, err := (&leaseStore{kube: kube}).read(t.Context(), target{Kind: "deployment", Namespace: ns, Name: "auth-service"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Refires != 0 || !st.BreakerOpenUntil.IsZero() {
		t.Fatalf("state after refused deliveries: refires %d, breaker open until %v", st.Refires, st.BreakerOpenUntil)
	}
}
