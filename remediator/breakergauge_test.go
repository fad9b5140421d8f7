package remediator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// breakerGauge reads warden_remediator_breaker_open for a target from the
// registry: its value, and whether the series exists.
func breakerGauge(t testing.TB, reg prometheus.Gatherer, ns, tgt string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "warden_remediator_breaker_open" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["namespace"] == ns && l["target"] == tgt {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestBreakerGaugeFollowsTheStore(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	// A paused Deployment refuses a rollout restart: the action fails.
	ns := setupTarget(t, kube, "auth-service", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	policy := strings.NewReplacer("cooldown: 3s", "cooldown: 0s", "failures: 3", "failures: 1").Replace(restartPolicy(ns, ""))
	clock := newTestClock()
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) { o.Now = clock.Now })
	a := firing("HighMemoryUsage", "b0rked", clock.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "the breaker to open", func() bool {
		return testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")) == 1
	})
	if v, ok := breakerGauge(t, tr.reg, ns, "deployment/auth-service"); v != 1 || !ok {
		t.Fatalf("breaker_open = %v (present %v) while open, want 1", v, ok)
	}

	// A restarted replica reports the breaker that is open in the Lease
	// before any alert reaches it.
	restarted := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) { o.Now = clock.Now })
	testenv.WaitFor(t, 30*time.Second, "the restarted replica to report the open breaker", func() bool {
		v, ok := breakerGauge(t, restarted.reg, ns, "deployment/auth-service")
		return ok && v == 1
	})

	// open_for (1h) passes: the page ends with the breaker.
	clock.Advance(time.Hour + time.Minute)
	for i, r := range []*testRemediator{tr, restarted} {
		testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("replica %d to report the breaker closed", i), func() bool {
			v, ok := breakerGauge(t, r.reg, ns, "deployment/auth-service")
			return ok && v == 0
		})
	}
}
