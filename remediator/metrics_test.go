package remediator

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"
)

func TestMetricsLint(t *testing.T) {
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), &recordingExecutor{}, nil)
	tr.metrics.breakerOpen.set(target{Kind: "deployment", Namespace: "ns", Name: "x"}, time.Time{})
	tr.metrics.escalations.WithLabelValues("ns", "deployment/x")
	problems, err := testutil.GatherAndLint(tr.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := tr.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"warden_remediator_actions_total": false, "warden_remediator_skipped_total": false,
		"warden_remediator_webhook_requests_total": false, "warden_remediator_webhook_duration_seconds": false,
		"warden_remediator_queue_depth": false, "warden_remediator_action_duration_seconds": false,
		"warden_remediator_breaker_open": false, "warden_remediator_escalations_total": false,
	}
	for _, mf := range mfs {
		if _, ok := want[mf.GetName()]; ok {
			want[mf.GetName()] = true
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("metric %s not exposed", name)
		}
	}
}
