package remediator

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestShutdownReportsAlertsItCouldNotFinish(t *testing.T) {
	exec := &recordingExecutor{block: make(chan struct{})}
	defer close(exec.block)
	tr := startRemediator(t, strings.Replace(declinePolicy, "rules:", "defaults: {cooldown: 0s}\nrules:", 1), fake.NewClientset(), exec, func(o *Options) { o.Workers = 1 })
	t0 := time.Now()
	var alerts []amtemplate.Alert
	for i := range 3 {
		alerts = append(alerts, firing("HighMemoryUsage", fmt.Sprintf("f%d", i), t0, nil))
	}
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(alerts...), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "the worker to start", func() bool { return len(tr.queue) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := tr.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "2 queued alerts not handled") {
		t.Fatalf("Shutdown = %v, want a report of 2 unhandled alerts", err)
	}
	if n := logsOf(t).count("queued alerts dropped"); n != 1 {
		t.Fatalf("%d drop log lines, want 1", n)
	}
}

func TestExactlyOnceAcrossReplicasAndDeliveries(t *testing.T) {
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	restarts := watchRestarts(t, admin, ns, "auth-service")
	// The replicas share a clock the test moves, so whether the refire
	// falls inside the cooldown depends on the test, not on the machine's
	// speed. The executors use it too: restartedAt changes with it.
	const cooldown = 10 * time.Second
	policy := strings.Replace(restartPolicy(ns, ""), "cooldown: 3s", "cooldown: 10s", 1)
	clock := newTestClock()

	var replicas []*testRemediator
	for i := range 3 {
		kube := kubeClient(t, k.Config)
		exec := actions.NewExecutor(kube, discardLogger(), actions.WithIdentity(fmt.Sprintf("replica-%d", i)), actions.WithClock(clock.Now))
		replicas = append(replicas, startRemediator(t, policy, kube, exec, func(o *Options) {
			o.Identity = fmt.Sprintf("replica-%d", i)
			o.Workers = 8
			o.Now = clock.Now
		}))
	}
	labels := map[string]string{"namespace": ns, "deployment": "auth-service", "severity": "warning"}
	startsAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	body := payload(firing("HighMemoryUsage", "a1b2c3d4e5f60718", startsAt, labels))

	const deliveries = 200
	var wg sync.WaitGroup
	var non2xx atomic.Int64
	for _, tr := range replicas {
		url := tr.server.URL + "/api/v1/alerts"
		for range 10 { // 10 concurrent senders per replica, 20 deliveries each
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range deliveries / 10 {
					if code, _, _ := post(t, url, body, nil); code != 202 {
						non2xx.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := non2xx.Load(); n != 0 {
		t.Fatalf("%d deliveries were not acknowledged with 202", n)
	}
	testenv.WaitFor(t, 2*time.Minute, "all 600 deliveries to be decided", func() bool { return decisions(replicas...) == 3*deliveries })
	testenv.WaitFor(t, 30*time.Second, "the watch to see the restart", func() bool { return restarts.Load() >= 1 })

	var acted, dups float64
	for _, tr := range replicas {
		acted += testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success"))
		dups += testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDuplicate))
	}
	if acted != 1 || dups != 3*deliveries-1 {
		t.Fatalf("restarts recorded %v (want 1), duplicates %v (want %d)", acted, dups, 3*deliveries-1)
	}
	if n := restarts.Load(); n != 1 {
		t.Fatalf("restartedAt changed %d times, want exactly 1", n)
	}
	waitEvents(t, admin, ns, "Remediated", 1)
	lease, err := admin.CoordinationV1().Leases(ns).Get(context.Background(), "warden-deployment-auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("coordination lease: %v", err)
	}
	if got := lease.Annotations[annoLastOccurrence]; got != occurrenceKey("a1b2c3d4e5f60718", startsAt, "restart") {
		t.Fatalf("lease records occurrence %q", got)
	}
	if got := lease.Annotations[annoLastActionTime]; got != clock.Now().UTC().Format(time.RFC3339Nano) {
		t.Fatalf("lease records the action at %q, want the replicas' clock %s", got, clock.Now().UTC().Format(time.RFC3339Nano))
	}

	// The alert resolves, then fires again with a new startsAt within the
	// cooldown: skipped. After the cooldown: a second restart.
	resolved := firing("HighMemoryUsage", "a1b2c3d4e5f60718", startsAt, labels)
	resolved.Status, resolved.EndsAt = "resolved", time.Now()
	tr := replicas[1]
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(resolved), nil); code != 202 {
		t.Fatalf("resolved: %d", code)
	}
	testenv.WaitFor(t, 30*time.Second, "resolution to be recorded", func() bool { return countEvents(t, admin, ns, "AlertResolved") == 1 })
	clock.Advance(cooldown / 2)
	second := firing("HighMemoryUsage", "a1b2c3d4e5f60718", startsAt.Add(time.Minute), labels)
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(second), nil); code != 202 {
		t.Fatalf("refire: %d", code)
	}
	testenv.WaitFor(t, 30*time.Second, "cooldown skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonCooldown)) == 1
	})
	clock.Advance(cooldown)
	third := firing("HighMemoryUsage", "a1b2c3d4e5f60718", startsAt.Add(2*time.Minute), labels)
	for _, r := range replicas { // every replica receives it; one acts
		if code, _, _ := post(t, r.server.URL+"/api/v1/alerts", payload(third), nil); code != 202 {
			t.Fatalf("refire after cooldown: %d", code)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "second restart", func() bool { return restarts.Load() == 2 })
	testenv.WaitFor(t, 30*time.Second, "all decisions", func() bool { return decisions(replicas...) == 3*deliveries+1+3 }) // resolved is not a metric
	time.Sleep(300 * time.Millisecond)
	if n := restarts.Load(); n != 2 {
		t.Fatalf("restartedAt changed %d times, want 2", n)
	}
	waitEvents(t, admin, ns, "Remediated", 2)
}

func TestBreakerOpensAfterRepeatedFailures(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	// A paused Deployment refuses a rollout restart: every action fails.
	ns := setupTarget(t, kube, "auth-service", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	tr := startRemediator(t, strings.Replace(restartPolicy(ns, ""), "cooldown: 3s", "cooldown: 0s", 1), kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	for i := range 4 {
		a := firing("HighMemoryUsage", fmt.Sprintf("f%d", i), t0.Add(time.Duration(i)*time.Second), labels)
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
			t.Fatalf("post %d: %d", i, code)
		}
		testenv.WaitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "failed")); got != 3 {
		t.Fatalf("failed restarts %v, want 3", got)
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonBreakerOpen)); got != 1 {
		t.Fatalf("breaker_open skips %v, want 1", got)
	}
	if got, _ := breakerGauge(t, tr.reg, ns, "deployment/auth-service"); got != 1 {
		t.Fatalf("warden_remediator_breaker_open = %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 1 {
		t.Fatalf("warden_remediator_escalations_total = %v, want 1", got)
	}
	if n := logsOf(t).count("escalating to Level 2"); n != 1 {
		t.Fatalf("%d escalation log lines, want 1", n)
	}
	waitEvents(t, kube, ns, "RemediationEscalated", 1)
	waitEvents(t, kube, ns, "RemediationFailed", 3)
}

func TestBreakerOpensAfterRefires(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	policy := strings.NewReplacer("cooldown: 3s", "cooldown: 0s", "refires: 5", "refires: 2").Replace(restartPolicy(ns, ""))
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	for i := range 3 {
		// The same alert (fingerprint) fires again after each remediation.
		a := firing("HighMemoryUsage", "feedface", t0.Add(time.Duration(i)*time.Minute), labels)
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
			t.Fatalf("post %d: %d", i, code)
		}
		testenv.WaitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 2 {
		t.Fatalf("successful restarts %v, want 2", got)
	}
	if got, _ := breakerGauge(t, tr.reg, ns, "deployment/auth-service"); got != 1 {
		t.Fatalf("breaker_open = %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 1 {
		t.Fatalf("escalations = %v, want 1", got)
	}
	lease, err := kube.CoordinationV1().Leases(ns).Get(context.Background(), "warden-deployment-auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Annotations[annoBreakerOpenUntil] == "" || lease.Annotations[annoRefires] != "2" {
		t.Fatalf("lease does not record the open breaker: %v", lease.Annotations)
	}
	// A second replica (fresh process memory) sees the open breaker too.
	other := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighMemoryUsage", "0ther", t0.Add(time.Hour), labels)
	if code, _, _ := post(t, other.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "breaker skip on another replica", func() bool {
		return testutil.ToFloat64(other.metrics.skipped.WithLabelValues(ReasonBreakerOpen)) == 1
	})
}

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

func TestOptOutAndDryRunChangeNothing(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	restarts := watchRestarts(t, kube, ns, "auth-service")
	tr := startRemediator(t, restartPolicy(ns, "dry_run: true"), kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	a := firing("HighMemoryUsage", "d1", time.Now().Truncate(time.Second), labels)
	for range 3 {
		post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	}
	testenv.WaitFor(t, 30*time.Second, "dry-run decisions", func() bool { return decisions(tr) == 3 })
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "dry_run")); got != 1 {
		t.Fatalf("dry_run actions %v, want 1 (repeats are duplicates)", got)
	}
	if _, err := kube.CoordinationV1().Leases(ns).Get(context.Background(), "warden-deployment-auth-service", metav1.GetOptions{}); err == nil {
		t.Fatal("dry-run wrote a coordination lease")
	}

	// Opt-out annotation: recorded as a skip, nothing changed.
	d, err := kube.AppsV1().Deployments(ns).Get(context.Background(), "auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Annotations = map[string]string{actions.OptOutAnnotation: actions.OptOutDisabled}
	if _, err := kube.AppsV1().Deployments(ns).Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	completeRollout(t, kube, d) // a Deployment's annotations count towards its generation
	tr.SetPolicy(mustPolicy(t, restartPolicy(ns, "")))
	waitCached(t, tr, kube, ns, "auth-service")
	post(t, tr.server.URL+"/api/v1/alerts", payload(firing("HighMemoryUsage", "d2", time.Now(), labels)), nil)
	testenv.WaitFor(t, 30*time.Second, "opt-out skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonOptedOut)) == 1
	})
	time.Sleep(200 * time.Millisecond)
	if n := restarts.Load(); n != 0 {
		t.Fatalf("restartedAt changed %d times in dry-run/opt-out", n)
	}
}

// TestRemediatorWorksWithShippedRBAC runs the remediator as a user bound only
// to the Role in deploy/remediator/rbac.yaml: claim (Lease), action, Event.
func TestRemediatorWorksWithShippedRBAC(t *testing.T) {
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	raw, err := os.ReadFile("../deploy/remediator/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	for _, doc := range strings.Split(string(raw), "\n---") {
		var r rbacv1.Role
		if err := sigsyaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatalf("rbac.yaml: %v", err)
		}
		if r.Kind == "Role" {
			role = &r
		}
	}
	if role == nil {
		t.Fatal("rbac.yaml has no Role")
	}
	role.Namespace, role.ResourceVersion = ns, ""
	ctx := context.Background()
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user := "remediator-" + ns
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "warden-remediator", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: user, APIGroup: "rbac.authorization.k8s.io"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := k.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	kube := kubeClient(t, cfg)
	restarts := watchRestarts(t, admin, ns, "auth-service")
	// The rate limit shared by all replicas lives in a Lease in the
	// remediator's own namespace, which the Role covers.
	policy := strings.Replace(restartPolicy(ns, ""), "actions_per_hour: 0", "actions_per_hour: 5", 1)
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) { o.CoordinationNamespace = ns })
	a := firing("HighMemoryUsage", "5afe", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	for range 3 {
		post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	}
	testenv.WaitFor(t, time.Minute, "decisions", func() bool { return decisions(tr) == 3 })
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 1 {
		t.Fatalf("restart as the restricted user: %v successes, want 1", got)
	}
	testenv.WaitFor(t, 30*time.Second, "restart", func() bool { return restarts.Load() == 1 })
	waitEvents(t, admin, ns, "Remediated", 1)
	if strings.Contains(logsOf(t).String(), "cannot record event") {
		t.Fatalf("event creation failed under the shipped RBAC:\n%s", logsOf(t).String())
	}
	if _, err := admin.CoordinationV1().Leases(ns).Get(ctx, rateLimitLease, metav1.GetOptions{}); err != nil {
		t.Fatalf("shared rate-limit lease under the shipped RBAC: %v", err)
	}
}

// TestRealAlertmanagerDeliveriesActOnce sends an alert through a real
// Alertmanager, which repeats the notification every 2 s with the bearer
// token from a file: its payload decodes, and the repeats are recognised as
// one occurrence.
func TestRealAlertmanagerDeliveriesActOnce(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	restarts := watchRestarts(t, kube, ns, "auth-service")
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)

	tokenFile := t.TempDir() + "/token"
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := testenv.WebhookRoute{
		URL:             tr.server.URL + "/api/v1/alerts",
		CredentialsFile: tokenFile,
		GroupInterval:   time.Second,
		RepeatInterval:  2 * time.Second,
		SendResolved:    true,
	}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	am := testenv.StartAlertmanager(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	labels := map[string]string{"alertname": "HighMemoryUsage", "namespace": ns, "deployment": "auth-service", "severity": "warning"}
	startsAt := time.Now().Add(-time.Minute)
	if err := am.PostAlert(ctx, labels, map[string]string{"summary": "memory"}, startsAt, time.Time{}); err != nil {
		t.Fatal(err)
	}
	accepted := tr.metrics.webhookRequests.WithLabelValues("202")
	testenv.WaitFor(t, 30*time.Second, "three deliveries from Alertmanager", func() bool { return testutil.ToFloat64(accepted) >= 3 })
	// A 202 means queued; the decision on the last delivery may still be
	// under way.
	duplicates := tr.metrics.skipped.WithLabelValues(ReasonDuplicate)
	testenv.WaitFor(t, 30*time.Second, "the repeats to be recognised as duplicates", func() bool { return testutil.ToFloat64(duplicates) >= 2 })
	testenv.WaitFor(t, 30*time.Second, "the watch to see the restart", func() bool { return restarts.Load() >= 1 })
	if n := restarts.Load(); n != 1 {
		t.Fatalf("restartedAt changed %d times after %v deliveries, want 1", n, testutil.ToFloat64(accepted))
	}
	for _, code := range []string{"400", "401", "413", "415"} {
		if got := testutil.ToFloat64(tr.metrics.webhookRequests.WithLabelValues(code)); got != 0 {
			t.Fatalf("Alertmanager's payload refused with %s", code)
		}
	}
	// Resolve it: the resolved notification closes out the record.
	if err := am.PostAlert(ctx, labels, map[string]string{"summary": "memory"}, startsAt, time.Now()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "resolved notification", func() bool { return countEvents(t, kube, ns, "AlertResolved") == 1 })
}

// BenchmarkReceiptToKubernetesWrite measures, against the real API server,
// the time from posting an alert to the Deployment change being observed
// through a watch (webhook, queue, Lease claim, scale write).
func BenchmarkReceiptToKubernetesWrite(b *testing.B) {
	k := kubeServer.Get(b)
	kube := kubeClient(b, k.Config)
	ns := setupTarget(b, kube, "auth-service", nil)
	policy := fmt.Sprintf(`
defaults: {cooldown: 0s, timeout: 20s}
rate_limit: {actions_per_hour: 0}
breaker: {failures: 3, refires: 1000000, window: 1h, open_for: 1h}
rules:
  - name: scale
    matchers: ['alertname="Load"']
    action: scale
    target: {namespace: %[1]s, deployment: auth-service}
    allow: {namespaces: [%[1]s], deployments: [auth-service]}
    scale: {delta: 1, min_replicas: 1, max_replicas: 1000000}
`, ns)
	tr := startRemediator(b, policy, kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) { o.Logger = discardLogger() })
	w, err := kube.AppsV1().Deployments(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=auth-service"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var replicas int32 = 2
	t0 := time.Now()
	b.ResetTimer()
	for i := range b.N {
		body := payload(firing("Load", "10ad", t0.Add(time.Duration(i)*time.Millisecond), nil))
		if code, _, _ := post(b, tr.server.URL+"/api/v1/alerts", body, nil); code != 202 {
			b.Fatal(code)
		}

		for replicas != int32(i)+3 {
			ev := <-w.ResultChan()
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				replicas = *d.Spec.Replicas
			}
		}
	}
}
