package remediator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/testenv"
)

func TestAdmitRate(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	entry := func(ago time.Duration, ns, target string) rateEntry {
		return rateEntry{At: now.Add(-ago), Namespace: ns, Target: target, Key: fmt.Sprint(ago, ns, target)}
	}
	tests := []struct {
		name    string
		entries []rateEntry
		next    rateEntry
		rl      RateLimitConfig
		refused string
		kept    int
	}{
		{"under the hourly limit", []rateEntry{entry(time.Minute, "a", "deployment/x")}, entry(0, "a", "deployment/x"), RateLimitConfig{ActionsPerHour: 2}, "", 2},
		{"hourly limit reached", []rateEntry{entry(time.Minute, "a", "deployment/x"), entry(2*time.Minute, "b", "deployment/y")}, entry(0, "a", "deployment/x"), RateLimitConfig{ActionsPerHour: 2}, "actions_per_hour", 2},
		{"entries older than an hour expire", []rateEntry{entry(61*time.Minute, "a", "deployment/x"), entry(2*time.Hour, "a", "deployment/x")}, entry(0, "a", "deployment/x"), RateLimitConfig{ActionsPerHour: 1}, "", 1},
		{"a new target in a full namespace", []rateEntry{entry(time.Minute, "a", "deployment/x"), entry(time.Minute, "a", "deployment/y")}, entry(0, "a", "deployment/z"), RateLimitConfig{MaxTargetsPerNamespace: 2}, "max_targets_per_namespace", 2},
		{"a target already acted on in a full namespace", []rateEntry{entry(time.Minute, "a", "deployment/x"), entry(time.Minute, "a", "deployment/y")}, entry(0, "a", "deployment/x"), RateLimitConfig{MaxTargetsPerNamespace: 2}, "", 3},
		{"other namespaces do not count", []rateEntry{entry(time.Minute, "a", "deployment/x"), entry(time.Minute, "a", "deployment/y")}, entry(0, "b", "deployment/z"), RateLimitConfig{MaxTargetsPerNamespace: 2}, "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, why := admitRate(tt.entries, tt.next, tt.rl)
			if (tt.refused == "") != (why == "") || !strings.Contains(why, tt.refused) {
				t.Fatalf("refusal %q, want one mentioning %q", why, tt.refused)
			}
			if len(kept) != tt.kept {
				t.Fatalf("%d entries kept, want %d", len(kept), tt.kept)
			}
		})
	}
}

func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	policy := strings.Replace(gatePolicy(ns, "", ""), "rate_limit: {actions_per_hour: 0}", "rate_limit: {actions_per_hour: 2}", 1)
	var replicas []*testRemediator
	for range 3 {
		replicas = append(replicas, startRemediator(t, policy, kube, &recordingExecutor{}, func(o *Options) { o.CoordinationNamespace = ns }))
	}
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	// Six different alerts, two to each replica.
	for i := range 6 {
		postFiring(t, replicas[i%3], fmt.Sprintf("q%d", i), t0.Add(time.Duration(i)*time.Second), labels)
	}
	testenv.WaitFor(t, time.Minute, "six decisions", func() bool { return decisions(replicas...) == 6 })
	var acted, limited float64
	for _, tr := range replicas {
		acted += testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success"))
		limited += testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonRateLimited))
	}
	if acted != 2 || limited != 4 {
		t.Fatalf("%v actions and %v rate_limited skips, want 2 and 4", acted, limited)
	}
	l, err := kube.CoordinationV1().Leases(ns).Get(context.Background(), rateLimitLease, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(l.Annotations[annoActions], `"key"`); n != 2 {
		t.Fatalf("shared window holds %d actions, want 2: %s", n, l.Annotations[annoActions])
	}
}
