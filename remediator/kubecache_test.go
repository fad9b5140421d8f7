package remediator

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// cachedTargetObjects are a namespace, a Deployment whose rollout is
// complete and the Lease of a target that acted a minute ago (so the next
// delivery is a cooldown refusal).
func cachedTargetObjects(now time.Time) []runtime.Object {
	t := target{Kind: "deployment", Namespace: "shop", Name: "auth-service"}
	st := targetState{LastActionAt: now.Add(-time.Minute), WindowStart: now.Add(-time.Minute), LastOutcome: outcomeActed,
		Occurrences: []occurrence{{Key: "old@x/restart", Fingerprint: "old", At: now.Add(-time.Minute), Outcome: outcomeActed}}}
	return []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "auth-service", Namespace: "shop", Generation: 2},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1},
		},
		&coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: leaseName(t), Namespace: "shop", ResourceVersion: "7",
				Labels: map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"}, Annotations: st.encode(t)},
		},
	}
}

const cachedTargetPolicy = `
defaults: {cooldown: 1h}
rules:
  - name: restart
    matchers: ['alertname="HighErrorRate"']
    action: restart
    target: {namespace: '{{ .Labels.namespace }}', deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [shop], deployments: [auth-service]}
`

// reads counts the get and list requests of the fake clientset by
// resource.
func reads(kube *fake.Clientset) map[string]int {
	n := map[string]int{}
	for _, a := range kube.Actions() {
		if a.GetVerb() == "get" || a.GetVerb() == "list" {
			n[a.GetVerb()+" "+a.GetResource().Resource]++
		}
	}
	return n
}

// TestCachesAnswerOnceSynced: once the informers have synced, a refused
// delivery (cooldown), the status page and the breaker refresh read the
// Leases, the namespace and the Deployment from the caches: no get or list
// reaches the API.
func TestCachesAnswerOnceSynced(t *testing.T) {
	kube := fake.NewClientset(cachedTargetObjects(time.Now())...)
	tr := startRemediator(t, cachedTargetPolicy, kube, &recordingExecutor{}, nil)
	waitSynced(t, tr, "shop", true)
	kube.ClearActions()

	postAndDecide(t, tr, 5)
	if got := skippedFor(tr, ReasonCooldown); got != 5 {
		t.Fatalf("%v cooldown refusals, want 5", got)
	}
	page := tr.status(context.Background())
	if len(page.Targets) != 1 || page.Targets[0].CooldownUntil.IsZero() {
		t.Fatalf("status page targets %+v, want the cached Lease in cooldown", page.Targets)
	}
	tr.refreshBreakers(context.Background())
	if n := reads(kube); len(n) > 0 {
		t.Fatalf("reads after sync: %v, want none", n)
	}
}

// TestApprovalRoundsReadTheLeaseCache: once the Lease informer has
// synced, the approval rounds of a quiet replica find the open records in
// the cache: no get or list reaches the API, and the pending one is
// counted.
func TestApprovalRoundsReadTheLeaseCache(t *testing.T) {
	now := time.Now()
	approvalLease := func(id, state string) runtime.Object {
		tg := target{Kind: "deployment", Namespace: "shop", Name: "auth-service-" + id}
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: approvalLeaseName(tg), Namespace: "shop", ResourceVersion: "9",
			Labels: map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"}, Annotations: map[string]string{}}}
		encodeApproval(l, Approval{ID: id, Namespace: "shop", Rule: "restart", Action: actions.Restart, Target: tg.String(),
			ProposedAt: now, ExpiresAt: now.Add(time.Hour), State: state})
		return l
	}
	objs := append(cachedTargetObjects(now), approvalLease("a1", StatePending), approvalLease("a2", StateClosed))
	kube := fake.NewClientset(objs...)
	policy := cachedTargetPolicy + "    approval: required\napprovals: {expire_after: 2h, poll_interval: 1h}\n"
	tr := startRemediator(t, policy, kube, &recordingExecutor{}, nil)
	waitSynced(t, tr, "shop", true)
	kube.ClearActions()
	for range 3 {
		tr.pollApprovals(context.Background())
	}
	if n := reads(kube); len(n) > 0 {
		t.Fatalf("reads of the approval rounds after sync: %v, want none", n)
	}
	if v := testutil.ToFloat64(tr.approvals.pending); v != 1 {
		t.Fatalf("approvals_pending = %v, want 1", v)
	}
}

// TestNamespacesForbiddenAreNotAskedPerDecision: with no permission to
// list namespaces (the shipped RBAC), decisions do not ask for the
// namespace each time; the refusals still come from the caches.
func TestNamespacesForbiddenAreNotAskedPerDecision(t *testing.T) {
	kube := fake.NewClientset(cachedTargetObjects(time.Now())...)
	kube.PrependReactor("*", "namespaces", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("namespaces"), "", fmt.Errorf("no"))
	})
	tr := startRemediator(t, cachedTargetPolicy, kube, &recordingExecutor{}, nil)
	waitSynced(t, tr, "shop", false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) { return tr.objects.namespacesForbidden.Load(), nil }); err != nil {
		t.Fatal("the refused namespace list was not noticed:", err)
	}
	kube.ClearActions()
	postAndDecide(t, tr, 3)
	if got := skippedFor(tr, ReasonCooldown); got != 3 {
		t.Fatalf("%v cooldown refusals, want 3", got)
	}
	if n := reads(kube); len(n) > 0 {
		t.Fatalf("reads: %v, want none", n)
	}
	if n := logsOf(t).count("cannot read namespaces"); n != 1 {
		t.Fatalf("%d warnings about namespaces, want 1", n)
	}
}

// waitSynced waits until the Lease and Deployment informers of ns (and,
// with namespace, its namespace informer) have synced.
func waitSynced(t testing.TB, tr *testRemediator, ns string, namespace bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		_, leases := tr.leases.cache.synced(ns)
		_, deps := tr.objects.deployments.synced(ns)
		nsSynced := true
		if namespace {
			_, nsSynced = tr.objects.namespaces.synced(ns)
		}
		return leases && deps && nsSynced, nil
	})
	if err != nil {
		t.Fatal("informers not synced:", err)
	}
}

// postAndDecide posts n distinct firing alerts on shop/auth-service and
// waits until each is decided.
func postAndDecide(t testing.TB, tr *testRemediator, n int) {
	t.Helper()
	labels := map[string]string{"namespace": "shop", "deployment": "auth-service"}
	for i := range n {
		if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(firing("HighErrorRate", fmt.Sprintf("fp%d", i), time.Now(), labels)), nil); code != 202 {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	waitDecisions(t, tr, float64(n))
}

func waitDecisions(t testing.TB, tr *testRemediator, n float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) { return decisions(tr) >= n, nil }); err != nil {
		t.Fatalf("%v decisions, want %v: %v", decisions(tr), n, err)
	}
}

func skippedFor(tr *testRemediator, reason string) float64 {
	return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(reason))
}

// waitCached waits until tr's informers hold the Deployment and its
// namespace as the API server has them now, as a running replica's do a
// moment after a change: the gates refuse on the cached copies.
func waitCached(t testing.TB, tr *testRemediator, kube kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		cd, ok := tr.objects.deployment(ns, name)
		if !ok || cd == nil || cd.ResourceVersion != d.ResourceVersion {
			return false, nil
		}
		cn, ok := tr.objects.namespace(ns)
		return tr.objects.namespacesForbidden.Load() || ok && cn != nil && cn.ResourceVersion == n.ResourceVersion, nil
	})
	if err != nil {
		t.Fatalf("the informers did not catch up with deployment %s/%s: %v", ns, name, err)
	}
}
