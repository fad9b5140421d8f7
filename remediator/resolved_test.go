package remediator

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
