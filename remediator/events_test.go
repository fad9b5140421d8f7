package remediator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestRepeatedSkipsOfOneTargetWriteOneEvent(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	tr := startRemediator(t, strings.Replace(restartPolicy(ns, ""), "cooldown: 3s", "cooldown: 1h", 1), kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	first := firing("HighMemoryUsage", "f1rst", t0, labels)
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(first), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "the action", func() bool { return decisions(tr) == 1 })
	// A flood of other alerts on the same target, all within the cooldown.
	const flood = 40
	var alerts []amtemplate.Alert
	for i := range flood {
		alerts = append(alerts, firing("HighMemoryUsage", fmt.Sprintf("f%04d", i), t0.Add(time.Second), labels))
	}
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(alerts...), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, time.Minute, "the skips", func() bool { return decisions(tr) == 1+flood })
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonCooldown)); got != flood {
		t.Fatalf("cooldown skips counted %v, want %d", got, flood)
	}
	// Events are written in order: once the resolution's Event is there,
	// every earlier one is too.
	resolved := first
	resolved.Status = "resolved"
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(resolved), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, time.Minute, "the AlertResolved event", func() bool { return countEvents(t, kube, ns, "AlertResolved") == 1 })
	if n := countEvents(t, kube, ns, "RemediationSkipped"); n != 1 {
		t.Fatalf("%d RemediationSkipped events for %d cooldown skips of one target, want 1", n, flood)
	}
}

func TestInvalidTargetWritesNoEvent(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	policy := recyclePolicy(ns, "defaults: {cooldown: 0s, timeout: 10s, retry_for: 1m}", "")
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger(), actions.WithMaxAttempts(1)), nil)
	t0 := time.Now().Truncate(time.Second)
	bad := firing("ContainerMemoryLeak", "bad", t0, map[string]string{"pod": "Not_A_Pod!"})
	// The second alert names a pod that does not exist: its failure's
	// Event comes after any Event of the first.
	missing := firing("ContainerMemoryLeak", "missing", t0, map[string]string{"pod": "gone"})
	for _, a := range []amtemplate.Alert{bad, missing} {
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
			t.Fatal(code)
		}
		testenv.WaitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) >= 1 })
	}
	waitEvents(t, kube, ns, "RemediationFailed", 1)
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonInvalidTarget)); got != 1 {
		t.Fatalf("invalid_target skips %v, want 1", got)
	}
	if n := countEvents(t, kube, ns, "RemediationSkipped"); n != 0 {
		t.Fatalf("%d RemediationSkipped events for a refused target, want 0", n)
	}
}
