package remediator

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestRefusedTargetIsRecorded(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	other := setupTarget(t, kube, "auth-service", nil)
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	// The alert names a namespace outside the allowlist.
	a := firing("HighMemoryUsage", "bad1", time.Now(), map[string]string{"namespace": other, "deployment": "auth-service"})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("refused alert must still be acknowledged, got %d", code)
	}
	testenv.WaitFor(t, 30*time.Second, "not_allowed skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonNotAllowed)) == 1
	})
	if !strings.Contains(logsOf(t).String(), `reason=not_allowed detail="namespace \"`+other+`\" is not in allow.namespaces"`) {
		t.Fatalf("refusal not logged:\n%s", logsOf(t).String())
	}
}
