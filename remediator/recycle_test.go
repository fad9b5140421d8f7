package remediator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// createPods creates n pods of the Deployment made by setupTarget, owned by
// a ReplicaSet the way the Deployment controller would name it.
func createPods(t testing.TB, kube kubernetes.Interface, ns, deployment string, n int, mod func(i int, p *corev1.Pod)) []string {
	t.Helper()
	const hash = "5d8f7c9b6"
	var names []string
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%s-%c", deployment, hash, 'a'+i), Namespace: ns,
				Labels: map[string]string{"app": deployment, appsv1.DefaultDeploymentUniqueLabelKey: hash},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: deployment + "-" + hash,
					UID: types.UID("rs-uid"), Controller: ptr.To(true)}},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		if mod != nil {
			mod(i, p)
		}
		if _, err := kube.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, p.Name)
	}
	return names
}

// recyclePolicy is one recycle rule for auth-service in ns, after head
// (defaults, breaker) and with block as the rule's recycle parameters.
func recyclePolicy(ns, head, block string) string {
	return fmt.Sprintf(`
%[2]s
rules:
  - name: recycle-leaking-pod
    matchers: ['alertname="ContainerMemoryLeak"']
    action: recycle
    target: {namespace: '%[1]s', deployment: auth-service, pod: '{{ .Labels.pod }}'}
    allow: {namespaces: ['%[1]s'], deployments: [auth-service]}
    %[3]s
`, ns, head, block)
}

func TestRecycleBlastRadiusCountsOnlyEvictionsAndRefusalsAreSkips(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	pods := createPods(t, kube, ns, "auth-service", 4, func(i int, p *corev1.Pod) {
		if i == 0 {
			p.Annotations = map[string]string{actions.OptOutAnnotation: actions.OptOutDisabled}
		}
	})
	policy := recyclePolicy(ns, `defaults: {cooldown: 1h, timeout: 20s, retry_for: 1m}
breaker: {failures: 2, refires: 5, window: 1h, open_for: 1h}`, "recycle: {max_fraction: 0.25}")
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), nil)
	t0 := time.Now().Truncate(time.Second)
	// One pod of four may go. The opted-out pod is not evicted, so the
	// next one is; the two after it are refused by the blast radius.
	for i, pod := range pods {
		a := firing("ContainerMemoryLeak", fmt.Sprintf("leak%d", i), t0, map[string]string{"pod": pod})
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
			t.Fatalf("post %d: %d", i, code)
		}
		testenv.WaitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonOptedOut)); got != 1 {
		t.Errorf("opted_out skips %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("recycle", "success")); got != 1 {
		t.Errorf("recycles %v, want 1 (the opted-out pod was never evicted)", got)
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues("blast_radius")); got != 2 {
		t.Errorf("blast_radius skips %v, want 2", got)
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("recycle", "failed")); got != 0 {
		t.Errorf("failed recycles %v, want 0", got)
	}
	if n := countEvents(t, kube, ns, "RemediationFailed"); n != 0 {
		t.Errorf("%d RemediationFailed events, want 0", n)
	}
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 0 {
		t.Errorf("escalations %v, want 0: refusals must not feed the breaker", got)
	}
	st, err := (&leaseStore{kube: kube}).read(t.Context(), target{Kind: "deployment", Namespace: ns, Name: "auth-service"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Failures != 0 {
		t.Errorf("lease records %d failures, want 0", st.Failures)
	}
}
