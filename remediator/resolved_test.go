package remediator

import (
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestDelayedFiringJobIsDroppedAfterItsResolvedNotification(t *testing.T) {
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	restarts := watchRestarts(t, admin, ns, "auth-service")

	apiURL, err := url.Parse(k.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: "127.0.0.1:0", backend: apiURL.Host, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(p.down)
	cfg := rest.CopyConfig(k.Config)
	cfg.Host = "https://" + p.addr
	cfg.Timeout = 2 * time.Second
	kube := kubeClient(t, cfg)
	tr := startRemediator(t, strings.Replace(restartPolicy(ns, ""), "retry_for: 1m", "retry_for: 10m", 1), kube, actions.NewExecutor(kube, discardLogger()), nil)

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
