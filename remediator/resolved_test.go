package remediator

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/remediator/actions"

	"github.com/warden-sre/warden/internal/testenv"
)

func TestDelayedFiringJobIsDroppedAfterItsResolvedNotification(t *testing.T) {
	bp := startBehindProxy(t)
	tr, p, ns, restarts := bp.tr, bp.proxy, bp.ns, bp.restarts
	p.down()
	a := firing("HighMemoryUsage", "de1ayed", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("firing: %d %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "a failed attempt to reach the API server", func() bool {
		return strings.Contains(logsOf(t).String(), "coordination store unavailable, retrying")
	})
	resolved := a
	resolved.Status = "resolved"
	resolved.EndsAt = time.Now()
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(resolved), nil); code != 202 {
		t.Fatalf("resolved: %d %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "both jobs retrying", func() bool {
		return logsOf(t).count("coordination store unavailable, retrying") >= 4
	})
	p.up(t)
	testenv.WaitFor(t, 2*time.Minute, "the stale firing job to be dropped", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues("resolved_before_action")) == 1
	})
	testenv.WaitFor(t, time.Minute, "both decisions", func() bool {
		return logsOf(t).count("remediation decision") == 2
	})
	if n := restarts.Load(); n != 0 {
		t.Fatalf("restarted %d times after the alert resolved, want 0", n)
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 0 {
		t.Fatalf("restart successes %v, want 0", got)
	}
}

// A delivery of an occurrence that already acted stays a duplicate after the
// alert resolved: resolved_before_action is for occurrences that never
// acted (Alertmanager and the demo replay firing bodies after a resolution).
func TestReplayAfterActionAndResolutionIsADuplicate(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighMemoryUsage", "acted1", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("firing: %d %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "the restart", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
	resolved := a
	resolved.Status = "resolved"
	resolved.EndsAt = time.Now()
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(resolved), nil); code != 202 {
		t.Fatalf("resolved: %d %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "the resolution", func() bool { return logsOf(t).count("remediation decision") == 2 })
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("replay: %d %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "the replay's decision", func() bool { return decisions(tr) == 2 })
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDuplicate)); got != 1 {
		t.Fatalf("duplicate skips %v, want 1 (resolved_before_action: %v)", got, testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonResolvedBeforeAction)))
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 1 {
		t.Fatalf("restarts %v, want 1", got)
	}
}
