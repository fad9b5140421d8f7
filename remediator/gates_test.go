package remediator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestFreezeWindows(t *testing.T) {
	mustFreeze := func(f Freeze) *Freeze {
		t.Helper()
		if err := f.compile("freezes[0]"); err != nil {
			t.Fatal(err)
		}
		return &f
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	// Monday 30 November 2026.
	monday := func(h, m int, loc *time.Location) time.Time { return time.Date(2026, 11, 30, h, m, 0, 0, loc) }
	tests := []struct {
		name   string
		freeze Freeze
		at     time.Time
		want   bool
	}{
		{"absolute inside", Freeze{Reason: "release", From: monday(0, 0, time.UTC), To: monday(12, 0, time.UTC)}, monday(6, 0, time.UTC), true},
		{"absolute end is exclusive", Freeze{Reason: "release", From: monday(0, 0, time.UTC), To: monday(12, 0, time.UTC)}, monday(12, 0, time.UTC), false},
		{"daily window in its zone", Freeze{Reason: "peak", TimeZone: "Europe/Berlin", Start: "08:00", End: "10:00"}, monday(9, 0, berlin), true},
		{"same instant outside in UTC terms", Freeze{Reason: "peak", TimeZone: "Europe/Berlin", Start: "08:00", End: "10:00"}, monday(9, 30, time.UTC), false},
		{"weekday list excludes monday", Freeze{Reason: "weekend", Days: []string{"sat", "sun"}, Start: "00:00", End: "23:59"}, monday(9, 0, time.UTC), false},
		{"overnight window after midnight belongs to the day before", Freeze{Reason: "batch", Days: []string{"sun"}, Start: "22:00", End: "02:00"}, monday(1, 0, time.UTC), true},
		{"overnight window not on that day", Freeze{Reason: "batch", Days: []string{"mon"}, Start: "22:00", End: "02:00"}, monday(1, 0, time.UTC), false},
		{"overnight window before midnight", Freeze{Reason: "batch", Days: []string{"mon"}, Start: "22:00", End: "02:00"}, monday(23, 0, time.UTC), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustFreeze(tt.freeze).active(tt.at); got != tt.want {
				t.Fatalf("active(%s) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestPolicyGateErrorsNameTheField(t *testing.T) {
	base := `
rules:
  - name: r
    matchers: ['alertname="A"']
    action: restart
    target: {namespace: ns, deployment: d}
    allow: {namespaces: [ns], deployments: [d]}
`
	tests := []struct{ extra, want string }{
		{"freezes: [{reason: x, start: '25:00', end: '02:00'}]", "freezes[0].start"},
		{"freezes: [{start: '01:00', end: '02:00'}]", "freezes[0].reason: required"},
		{"freezes: [{reason: x, from: 2026-12-02T00:00:00Z, to: 2026-12-01T00:00:00Z}]", "freezes[0]: from and to"},
		{"freezes: [{reason: x, days: [mo], start: '01:00', end: '02:00'}]", "freezes[0].days[0]"},
		{"freezes: [{reason: x, time_zone: Mars/Olympus, start: '01:00', end: '02:00'}]", "freezes[0].time_zone"},
		{"verify: {window: 0s}", "verify.window"},
		{"gates: {recent_rollout: -1m}", "gates.recent_rollout"},
		{"defaults: {max_delay: -1s}", "defaults.max_delay"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.extra + base))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	_, err := ParsePolicy([]byte(base + "    block_when: [['alertname=~\"DatabaseDown|RedisDown\"'], []]\n"))
	if err == nil || !strings.Contains(err.Error(), "rules[0].block_when[1]") {
		t.Fatalf("empty block_when set: %v", err)
	}
}

func TestFreezeAnnotation(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		annos map[string]string
		want  bool
	}{
		{"none", nil, false},
		{"future", map[string]string{FreezeUntilAnnotation: "2026-11-30T07:00:00Z", FreezeReasonAnnotation: "db migration"}, true},
		{"expired", map[string]string{FreezeUntilAnnotation: "2026-11-30T05:00:00Z"}, false},
		{"unreadable freezes", map[string]string{FreezeUntilAnnotation: "tomorrow"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, got := freezeAnnotation(tt.annos, now); got != tt.want {
				t.Fatalf("frozen = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRolloutGate(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	managed := func(manager string) []metav1.ManagedFieldsEntry {
		return []metav1.ManagedFieldsEntry{
			{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate, Time: ptr.To(metav1.NewTime(now.Add(-time.Hour)))},
			{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: ptr.To(metav1.NewTime(now))},
			{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, Time: ptr.To(metav1.NewTime(now.Add(-time.Minute)))},
		}
	}
	dep := func(gen, observed int64, updated int32, manager string, progressedAgo time.Duration) *appsv1.Deployment {
		if manager == "scale" {
			// The scale subresource's entry carries no time.
			mf := managed("kubectl")
			mf[2] = metav1.ManagedFieldsEntry{Manager: actions.FieldManager, Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "scale"}
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "auth-service", Generation: gen, ManagedFields: mf},
				Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3)}, Status: appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: 2, UpdatedReplicas: updated, AvailableReplicas: 2}}
			return d
		}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "auth-service", Generation: gen, ManagedFields: managed(manager)},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: 2, UpdatedReplicas: updated, AvailableReplicas: 2},
		}
		d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: "NewReplicaSetAvailable", LastUpdateTime: metav1.NewTime(now.Add(-progressedAgo))}}
		return d
	}
	tests := []struct {
		name string
		d    *appsv1.Deployment
		want string
	}{
		{"settled", dep(3, 3, 2, "kubectl", time.Hour), ""},
		{"generation not observed", dep(4, 3, 2, "kubectl", time.Hour), ReasonRolloutInProgress},
		{"replicas not updated", dep(3, 3, 1, "kubectl", time.Hour), ReasonRolloutInProgress},
		{"finished a minute ago", dep(3, 3, 2, "kubectl", time.Minute), ReasonRecentRollout},
		{"created a minute ago", dep(1, 1, 2, "kubectl", time.Minute), ""},
		{"the remediator's own restart in progress", dep(4, 3, 1, actions.FieldManager, time.Minute), ""},
		{"the remediator's own restart just finished", dep(3, 3, 2, actions.FieldManager, time.Minute), ""},
		{"the remediator's own scale, known from its record", dep(4, 3, 2, "scale", 0), ""},
		{"someone else's change after the remediator's last action", dep(4, 3, 1, "kubectl", time.Minute), ReasonRolloutInProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lastAction := time.Time{}
			if strings.Contains(tt.name, "known from its record") {
				lastAction = now.Add(-30 * time.Second)
			}
			if strings.Contains(tt.name, "after the remediator's last action") {
				lastAction = now.Add(-2 * time.Minute)
			}
			if got, detail := rolloutGate(tt.d, now, 10*time.Minute, lastAction); got != tt.want {
				t.Fatalf("rolloutGate = %q (%s), want %q", got, detail, tt.want)
			}
		})
	}
}

// gatePolicy is restartPolicy without the cooldown; extra goes at the top
// level, ruleExtra into the rule.
func gatePolicy(ns, extra, ruleExtra string) string {
	return strings.Replace(restartPolicy(ns, extra), "cooldown: 3s", "cooldown: 0s", 1) + ruleExtra
}

// waitSkips waits until tr has refused n times for reason, and checks that
// the refusals' log lines contain want.
func waitSkips(t testing.TB, tr *testRemediator, reason string, n float64, want string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%v %s refusals", n, reason), func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(reason)) == n
	})
	if want != "" && !strings.Contains(logsOf(t).String(), want) {
		t.Fatalf("no %s refusal says %q", reason, want)
	}
}

func postFiring(t testing.TB, tr *testRemediator, fp string, startsAt time.Time, labels map[string]string) {
	t.Helper()
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(firing("HighMemoryUsage", fp, startsAt, labels)), nil); code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
}

func TestGateRefusesDuringSomeoneElsesRollout(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	restarts := watchRestarts(t, kube, ns, "auth-service")
	tr := startRemediator(t, gatePolicy(ns, "", ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	ctx := context.Background()
	// Someone deploys a new image; the rollout has not finished.
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, "auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "registry.example/app:2"
	if _, err := kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	for i := range 3 {
		postFiring(t, tr, fmt.Sprintf("r%d", i), t0.Add(time.Duration(i)*time.Second), labels)
	}
	waitSkips(t, tr, ReasonRolloutInProgress, 3, "")
	// Three refusals, one Event: no Event storm. The recorder writes in
	// the background.
	waitEvents(t, kube, ns, "RemediationSkipped", 1)

	// The rollout finished just now: still refused, as recent.
	d, err = kube.AppsV1().Deployments(ns).Get(ctx, "auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable",
			LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}}}
	if _, err := kube.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCached(t, tr, kube, ns, "auth-service")
	postFiring(t, tr, "r3", t0.Add(time.Minute), labels)
	waitSkips(t, tr, ReasonRecentRollout, 1, "")
	if n := restarts.Load(); n != 0 {
		t.Fatalf("restarted %d times during someone else's rollout", n)
	}

	// Without the recent-rollout gate the remediator acts; then its own
	// rollout does not refuse the next occurrence.
	tr.SetPolicy(mustPolicy(t, gatePolicy(ns, "gates: {recent_rollout: 0s}", "")))
	postFiring(t, tr, "r4", t0.Add(2*time.Minute), labels)
	postFiring(t, tr, "r5", t0.Add(3*time.Minute), labels)
	testenv.WaitFor(t, 30*time.Second, "two restarts", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 2
	})
}

func TestFreezeAnnotationRefusesUntilItExpires(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	clock := newTestClock()
	ns := setupTarget(t, kube, "auth-service", func(d *appsv1.Deployment) {
		d.Annotations = map[string]string{
			FreezeUntilAnnotation:  clock.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339),
			FreezeReasonAnnotation: "database migration",
		}
	})
	tr := startRemediator(t, gatePolicy(ns, "", ""), kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) { o.Now = clock.Now })
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	postFiring(t, tr, "z1", t0, labels)
	waitSkips(t, tr, ReasonFrozen, 1, "database migration")
	// The freeze expires: the next occurrence acts.
	clock.Advance(11 * time.Minute)
	postFiring(t, tr, "z2", t0.Add(time.Minute), labels)
	testenv.WaitFor(t, 30*time.Second, "restart after the freeze", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})

	// A freeze on the namespace holds every target in it.
	ctx := context.Background()
	n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations = map[string]string{FreezeUntilAnnotation: clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), FreezeReasonAnnotation: "incident 42"}
	if _, err := kube.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCached(t, tr, kube, ns, "auth-service")
	postFiring(t, tr, "z3", t0.Add(2*time.Minute), labels)
	waitSkips(t, tr, ReasonFrozen, 2, "")
}

func TestPolicyFreezeRefuses(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	now := time.Now().UTC()
	extra := fmt.Sprintf("freezes: [{reason: end-of-year change freeze, from: %s, to: %s}]",
		now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	tr := startRemediator(t, gatePolicy(ns, extra, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	postFiring(t, tr, "p1", now, map[string]string{"namespace": ns, "deployment": "auth-service"})
	waitSkips(t, tr, ReasonFrozen, 1, "end-of-year change freeze")
}

var alertmanagerServer = testenv.NewLazy(func() (*testenv.Alertmanager, error) {
	// Nothing listens on the webhook URL: these tests read Alertmanager's
	// API, they do not need its notifications.
	cfg, err := testenv.WebhookRoute{URL: "http://127.0.0.1:9/"}.YAML()
	if err != nil {
		return nil, err
	}
	return testenv.NewAlertmanager(context.Background(), cfg)
}, (*testenv.Alertmanager).Stop)

func TestBlockWhenDatabaseDownFiresInAlertmanager(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	am := alertmanagerServer.Get(t)
	ns := setupTarget(t, kube, "auth-service", nil)
	block := fmt.Sprintf("    block_when:\n      - ['alertname=~\"DatabaseDown|RedisDown\"', 'namespace=\"%s\"']\n", ns)
	tr := startRemediator(t, gatePolicy(ns, "", block), kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) {
		o.Alertmanager = &AlertmanagerReader{URL: am.URL}
	})
	ctx := context.Background()
	dbDown := map[string]string{"alertname": "DatabaseDown", "namespace": ns, "severity": "critical"}
	since := time.Now().Add(-time.Minute)
	if err := am.PostAlert(ctx, dbDown, nil, since, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := am.WaitForAlert(ctx, "DatabaseDown", map[string]string{"namespace": ns}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	t0 := time.Now().Truncate(time.Second)
	postFiring(t, tr, "b1", t0, labels)
	waitSkips(t, tr, ReasonBlockedByAlert, 1, "DatabaseDown firing")
	// The database is back: the next occurrence acts.
	if err := am.PostAlert(ctx, dbDown, nil, since, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := am.WaitForResolved(ctx, "DatabaseDown", map[string]string{"namespace": ns}); err != nil {
		t.Fatal(err)
	}
	postFiring(t, tr, "b2", t0.Add(time.Minute), labels)
	testenv.WaitFor(t, 30*time.Second, "restart once the database is back", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
}

func TestStaleJobIsDroppedUnlessItsAlertStillFires(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	am := alertmanagerServer.Get(t)
	ns := setupTarget(t, kube, "auth-service", nil)
	clock := newTestClock()
	// One worker, held by the first job, so that the next ones wait in the
	// queue while the clock moves past max_delay (1m).
	exec := &heldExecutor{entered: make(chan struct{}), release: make(chan struct{})}
	tr := startRemediator(t, gatePolicy(ns, "", ""), kube, exec, func(o *Options) {
		o.Now = clock.Now
		o.Workers = 1
		o.Alertmanager = &AlertmanagerReader{URL: am.URL}
	})
	labels := map[string]string{"alertname": "HighMemoryUsage", "namespace": ns, "deployment": "auth-service"}
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	// s2 still fires in Alertmanager; s1 does not any more.
	still := map[string]string{"alertname": "HighMemoryUsage", "namespace": ns, "deployment": "auth-service", "pod": "still"}
	if err := am.PostAlert(ctx, still, nil, t0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := am.WaitForAlert(ctx, "HighMemoryUsage", map[string]string{"namespace": ns}); err != nil {
		t.Fatal(err)
	}
	postFiring(t, tr, "s0", t0, labels)
	select {
	case <-exec.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first job never reached the executor")
	}
	postFiring(t, tr, "s1", t0, map[string]string{"namespace": ns, "deployment": "auth-service", "pod": "gone"})
	postFiring(t, tr, "s2", t0, still)
	clock.Advance(2 * time.Minute)
	close(exec.release)
	testenv.WaitFor(t, 30*time.Second, "three decisions", func() bool { return decisions(tr) == 3 })
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonStale)); got != 1 {
		t.Fatalf("stale skips %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 2 {
		t.Fatalf("restarts %v, want 2 (the job that held the worker, and the alert still firing)", got)
	}
}

// heldExecutor holds its first action until release is closed.
type heldExecutor struct {
	entered, release chan struct{}
	once             sync.Once
}

func (e *heldExecutor) Run(ctx context.Context, req actions.Request) (actions.Result, error) {
	e.once.Do(func() {
		close(e.entered)
		select {
		case <-e.release:
		case <-ctx.Done():
		}
	})
	return actions.Result{Changed: true, Verified: true, Object: "Deployment/" + req.Deployment}, ctx.Err()
}

func TestPolicyKeepsDefaultsOfPartlySetBlocks(t *testing.T) {
	p, err := ParsePolicy([]byte("verify: {window: 5m}\ngates: {event_interval: 1m}\nrules: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultVerifyConfig
	want.Window = 5 * time.Minute
	if p.Verify != want {
		t.Fatalf("verify = %+v, want %+v", p.Verify, want)
	}
	if p.Gates.RecentRollout != DefaultGatesConfig.RecentRollout || p.Defaults.MaxDelay != time.Minute {
		t.Fatalf("gates = %+v, max_delay %s: defaults lost", p.Gates, p.Defaults.MaxDelay)
	}
}

// FuzzFreezeAnnotation: whatever a person writes into the annotation, the
// target is either frozen until a time after now or not frozen, and an
// unreadable value freezes.
func FuzzFreezeAnnotation(f *testing.F) {
	for _, s := range []string{"2026-11-30T07:00:00Z", "2026-11-30T05:00:00+01:00", "tomorrow", " ", "2026-13-01T00:00:00Z"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		until, _, frozen := freezeAnnotation(map[string]string{FreezeUntilAnnotation: v}, now)
		parsed, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
		switch {
		case strings.TrimSpace(v) == "":
			if frozen {
				t.Fatalf("empty value %q froze", v)
			}
		case err != nil:
			if !frozen {
				t.Fatalf("unreadable value %q did not freeze", v)
			}
		case frozen != parsed.After(now):
			t.Fatalf("value %q: frozen %v until %q", v, frozen, until)
		}
	})
}
