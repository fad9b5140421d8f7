package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

func getDeployment(t testing.TB, client kubernetes.Interface, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := client.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	return d
}

func managedBy(meta metav1.ObjectMeta, manager string) bool {
	for _, f := range meta.ManagedFields {
		if f.Manager == manager {
			return true
		}
	}
	return false
}

func TestRestartPatchesPodTemplateAndAdvancesGeneration(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	createWorkload(t, k.Client, ns, "auth-service", 2)
	before := getDeployment(t, k.Client, ns, "auth-service")

	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ex := NewExecutor(k.Client, testLogger(t), WithClock(func() time.Time { return now }), WithIdentity("warden-remediator-0"))
	res, err := ex.Run(context.Background(), Request{Kind: Restart, Namespace: ns, Deployment: "auth-service", Reason: "HighMemoryUsage 3f2a9c"})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !res.Changed || !res.Verified || res.Object != "Deployment/auth-service" {
		t.Errorf("result %+v: want changed, verified, Deployment/auth-service", res)
	}
	after := getDeployment(t, k.Client, ns, "auth-service")
	want := map[string]string{
		RestartedAtAnnotation: "2026-11-27T12:00:00Z",
		RestartedByAnnotation: "warden-remediator-0",
		ReasonAnnotation:      "HighMemoryUsage 3f2a9c",
	}
	for key, v := range want {
		if got := after.Spec.Template.Annotations[key]; got != v {
			t.Errorf("pod template annotation %s = %q, want %q", key, got, v)
		}
	}
	if after.Generation != before.Generation+1 {
		t.Errorf("generation %d -> %d, want +1", before.Generation, after.Generation)
	}
	if *after.Spec.Replicas != *before.Spec.Replicas || len(after.Annotations) != len(before.Annotations) {
		t.Error("restart changed more than the pod template annotations")
	}
	if !managedBy(after.ObjectMeta, FieldManager) {
		t.Errorf("no managedFields entry for %s", FieldManager)
	}
	if !strings.Contains(res.Detail, fmt.Sprintf("generation %d -> %d", before.Generation, after.Generation)) {
		t.Errorf("detail %q does not report the generation", res.Detail)
	}

	// A second restart a minute later without a reason rolls again and drops
	// the stale reason.
	now = now.Add(time.Minute)
	res, err = ex.Run(context.Background(), Request{Kind: Restart, Namespace: ns, Deployment: "auth-service"})
	if err != nil || !res.Verified {
		t.Fatalf("second restart: %+v, %v", res, err)
	}
	again := getDeployment(t, k.Client, ns, "auth-service")
	if again.Generation != after.Generation+1 || again.Spec.Template.Annotations[RestartedAtAnnotation] != "2026-11-27T12:01:00Z" {
		t.Errorf("second restart: generation %d, restartedAt %q", again.Generation, again.Spec.Template.Annotations[RestartedAtAnnotation])
	}
	if _, ok := again.Spec.Template.Annotations[ReasonAnnotation]; ok {
		t.Error("stale reason annotation left behind")
	}

	// The same second and the same reason: the template is already as
	// requested, so nothing changes and nothing is claimed.
	res, err = ex.Run(context.Background(), Request{Kind: Restart, Namespace: ns, Deployment: "auth-service"})
	if err != nil || res.Changed || res.Verified {
		t.Errorf("repeat within the second: %+v, %v; want unchanged", res, err)
	}
	if g := getDeployment(t, k.Client, ns, "auth-service").Generation; g != again.Generation {
		t.Errorf("repeat moved generation %d -> %d", again.Generation, g)
	}
}

func TestRestartRefusesPausedDeployment(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	createWorkload(t, k.Client, ns, "auth-service", 1, withDeployment(func(d *appsv1.Deployment) { d.Spec.Paused = true }))
	before := getDeployment(t, k.Client, ns, "auth-service")
	ex := NewExecutor(k.Client, testLogger(t))
	res, err := ex.Run(context.Background(), Request{Kind: Restart, Namespace: ns, Deployment: "auth-service"})
	if !errors.Is(err, ErrPaused) || Reason(err) != ReasonPaused || IsTransient(err) {
		t.Fatalf("restart of paused deployment: %v (reason %q); want permanent ErrPaused", err, Reason(err))
	}
	if res.Changed {
		t.Error("Changed reported for a refused restart")
	}
	if after := getDeployment(t, k.Client, ns, "auth-service"); after.ResourceVersion != before.ResourceVersion {
		t.Error("paused deployment was modified")
	}
}

func TestMissingDeploymentIsNotFoundAndNotRetried(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	ex := NewExecutor(k.Client, testLogger(t))
	for _, kind := range []Kind{Restart, Scale, Recycle, Reload} {
		t.Run(string(kind), func(t *testing.T) {
			_, err := ex.Run(context.Background(), Request{Kind: kind, Namespace: ns, Deployment: "ghost", Pod: "ghost-abc", Delta: ptr[int32](1),
				MaxReplicas: 3, MaxFraction: 1, ReloadPort: 8080, ReloadPath: "/-/reload", Timeout: time.Minute})
			if !apierrors.IsNotFound(err) || Reason(err) != ReasonNotFound || IsTransient(err) {
				t.Fatalf("%v (reason %q): want permanent not_found", err, Reason(err))
			}
			// A retried error says how often it was tried.
			if strings.Contains(err.Error(), "attempts") {
				t.Errorf("not found was retried: %v", err)
			}
		})
	}
}

func TestActionsRefuseOptedOutTargets(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	optOut := func(d *appsv1.Deployment) { d.Annotations = map[string]string{OptOutAnnotation: OptOutDisabled} }
	createWorkload(t, k.Client, ns, "quiet", 2, withDeployment(optOut))
	w := createWorkload(t, k.Client, ns, "auth-service", 2)
	pod := w.pods[0]
	pod.Annotations = map[string]string{OptOutAnnotation: OptOutDisabled}
	if _, err := k.Client.CoreV1().Pods(ns).Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := getDeployment(t, k.Client, ns, "quiet")
	ex := NewExecutor(k.Client, testLogger(t))
	tests := []struct {
		name string
		req  Request
	}{
		{"restart", Request{Kind: Restart, Namespace: ns, Deployment: "quiet"}},
		{"scale", Request{Kind: Scale, Namespace: ns, Deployment: "quiet", Replicas: ptr[int32](4), MaxReplicas: 5}},
		{"reload", Request{Kind: Reload, Namespace: ns, Deployment: "quiet", ReloadPort: 8080, ReloadPath: "/-/reload"}},
		{"recycle opted-out deployment", Request{Kind: Recycle, Namespace: ns, Deployment: "quiet", Pod: "quiet-" + podTemplateHash + "-abcde", MaxFraction: 1}},
		{"recycle opted-out pod", Request{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: pod.Name, MaxFraction: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ex.Run(context.Background(), tt.req)
			if !errors.Is(err, ErrOptedOut) || IsTransient(err) || Reason(err) != ReasonOptedOut {
				t.Fatalf("%v: want permanent ErrOptedOut", err)
			}
		})
	}
	if after := getDeployment(t, k.Client, ns, "quiet"); after.ResourceVersion != before.ResourceVersion {
		t.Error("opted-out deployment was modified")
	}
	if p, err := k.Client.CoreV1().Pods(ns).Get(context.Background(), pod.Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Errorf("opted-out pod was evicted: %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	port, servers := startReloadServers(t, []string{"127.0.0.1"}, []int{200})
	w := createWorkload(t, k.Client, ns, "auth-service", 2, withPodIPs("127.0.0.1", "127.0.0.1"))
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "auth-service", Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr(intstr.FromInt32(2)), Selector: w.deployment.Spec.Selector},
	}
	ex := NewExecutor(k.Client, testLogger(t))
	tests := []struct {
		name   string
		req    Request
		detail string
	}{
		{"restart", Request{Kind: Restart, Namespace: ns, Deployment: "auth-service"}, "dry run: would set " + RestartedAtAnnotation},
		{"scale", Request{Kind: Scale, Namespace: ns, Deployment: "auth-service", Delta: ptr[int32](3), MaxReplicas: 4}, "dry run: would scale 2 -> 4 replicas (clamped to maximum 4)"},
		{"recycle", Request{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[0].Name, MaxFraction: 0.5}, "dry run: would evict pod"},
		{"recycle blocked by a budget", Request{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[0].Name, MaxFraction: 0.5}, "dry run: a PodDisruptionBudget currently blocks"},
		{"reload", Request{Kind: Reload, Namespace: ns, Deployment: "auth-service", ReloadPort: port, ReloadPath: "/-/reload"}, "dry run: would send POST /-/reload to 2 ready pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "recycle blocked by a budget" {
				if _, err := k.Client.PolicyV1().PodDisruptionBudgets(ns).Create(context.Background(), pdb, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			d0 := getDeployment(t, k.Client, ns, "auth-service")
			pods0, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.req.DryRun = true
			tt.req.Timeout = time.Minute
			res, err := ex.Run(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			if res.Changed || res.Verified || !strings.Contains(res.Detail, tt.detail) {
				t.Errorf("result %+v: want unchanged with detail containing %q", res, tt.detail)
			}
			if d1 := getDeployment(t, k.Client, ns, "auth-service"); d1.ResourceVersion != d0.ResourceVersion {
				t.Error("dry run modified the deployment")
			}
			pods1, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(pods1.Items) != len(pods0.Items) {
				t.Fatal("dry run changed the pods")
			}
			for i := range pods1.Items {
				if pods1.Items[i].DeletionTimestamp != nil || pods1.Items[i].ResourceVersion != pods0.Items[i].ResourceVersion {
					t.Errorf("dry run touched pod %s", pods1.Items[i].Name)
				}
			}
		})
	}
	if n := servers[0].calls.Load(); n != 0 {
		t.Errorf("dry run sent %d reload requests", n)
	}
}

func TestScaleThroughSubresourceClampsToBounds(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	createWorkload(t, k.Client, ns, "auth-service", 0, withDeployment(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr[int32](2) }))
	ex := NewExecutor(k.Client, testLogger(t))
	steps := []struct {
		name     string
		replicas *int32
		delta    *int32
		min, max int32
		want     int32
		changed  bool
	}{
		{"set above max is clamped", ptr[int32](10), nil, 1, 5, 5, true},
		{"scale down past min stops at min", nil, ptr[int32](-10), 2, 5, 2, true},
		{"at min, scale down is a no-op", nil, ptr[int32](-1), 2, 5, 2, false},
		{"add within bounds", nil, ptr[int32](1), 2, 5, 3, true},
		{"set to current is a no-op", ptr[int32](3), nil, 1, 5, 3, false},
		{"min above current raises a set", ptr[int32](1), nil, 4, 6, 4, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := getDeployment(t, k.Client, ns, "auth-service")
			res, err := ex.Run(context.Background(), Request{Kind: Scale, Namespace: ns, Deployment: "auth-service",
				Replicas: s.replicas, Delta: s.delta, MinReplicas: s.min, MaxReplicas: s.max})
			if err != nil {
				t.Fatalf("scale: %v", err)
			}
			after := getDeployment(t, k.Client, ns, "auth-service")
			if *after.Spec.Replicas != s.want {
				t.Errorf("replicas = %d, want %d", *after.Spec.Replicas, s.want)
			}
			if res.Changed != s.changed || res.Verified != s.changed {
				t.Errorf("result %+v: want changed=verified=%v", res, s.changed)
			}
			if !s.changed && after.ResourceVersion != before.ResourceVersion {
				t.Error("no-op scale wrote the deployment")
			}
			if s.changed && !managedBy(after.ObjectMeta, FieldManager) {
				t.Errorf("no managedFields entry for %s", FieldManager)
			}
		})
	}
}

// Concurrent relative scales read-modify-write the same scale subresource;
// conflicts must be retried so that no increment is lost.
func TestConcurrentScalesLoseNoIncrement(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	createWorkload(t, k.Client, ns, "auth-service", 0, withDeployment(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr[int32](1) }))
	ex := NewExecutor(k.Client, testLogger(t), WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ex.Run(context.Background(), Request{Kind: Scale, Namespace: ns, Deployment: "auth-service", Delta: ptr[int32](1), MinReplicas: 1, MaxReplicas: 20})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("scale %d: %v", i, err)
		}
	}
	if got := *getDeployment(t, k.Client, ns, "auth-service").Spec.Replicas; got != 1+n {
		t.Errorf("replicas = %d after %d concurrent +1, want %d", got, n, 1+n)
	}
}

func TestRecycleEvictsTheNamedPodOnly(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	w := createWorkload(t, k.Client, ns, "auth-service", 4, withGracePeriod(0))
	ex := NewExecutor(k.Client, testLogger(t))
	res, err := ex.Run(context.Background(), Request{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[1].Name, MaxFraction: 0.5, RecentlyRecycled: 1})
	if err != nil {
		t.Fatalf("recycle: %v", err)
	}
	if !res.Changed || !res.Verified || res.Object != "Pod/"+w.pods[1].Name {
		t.Errorf("result %+v: want changed and verified on the pod", res)
	}
	for i, p := range w.pods {
		got, err := k.Client.CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{})
		evicted := apierrors.IsNotFound(err) || (err == nil && got.DeletionTimestamp != nil)
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if evicted != (i == 1) {
			t.Errorf("pod %s evicted=%v", p.Name, evicted)
		}
	}
	t.Logf("detail: %s", res.Detail)
}

func TestRecycleRefusals(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	auth := createWorkload(t, k.Client, ns, "auth", 4)
	other := createWorkload(t, k.Client, ns, "auth-service", 1)
	bare := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "auth-bare", Namespace: ns, Labels: map[string]string{"app": "auth"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	if _, err := k.Client.CoreV1().Pods(ns).Create(context.Background(), bare, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ex := NewExecutor(k.Client, testLogger(t))
	tests := []struct {
		name   string
		req    Request
		target error
		reason string
	}{
		{"pod of another deployment with a shared prefix", Request{Deployment: "auth", Pod: other.pods[0].Name, MaxFraction: 1}, ErrNotOwned, ReasonInvalid},
		{"bare pod with matching labels", Request{Deployment: "auth", Pod: "auth-bare", MaxFraction: 1}, ErrNotOwned, ReasonInvalid},
		{"fraction used up", Request{Deployment: "auth", Pod: auth.pods[0].Name, MaxFraction: 0.5, RecentlyRecycled: 2}, ErrBlastRadius, ReasonBlastRadius},
		{"fraction below one pod", Request{Deployment: "auth", Pod: auth.pods[0].Name, MaxFraction: 0.2}, ErrBlastRadius, ReasonBlastRadius},
		{"single pod needs fraction one", Request{Deployment: "auth-service", Pod: other.pods[0].Name, MaxFraction: 0.9}, ErrBlastRadius, ReasonBlastRadius},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Kind, tt.req.Namespace = Recycle, ns
			_, err := ex.Run(context.Background(), tt.req)
			if !errors.Is(err, tt.target) || IsTransient(err) || Reason(err) != tt.reason {
				t.Fatalf("%v (reason %q): want permanent %v", err, Reason(err), tt.target)
			}
		})
	}
	pods, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			t.Errorf("refused recycle evicted %s", p.Name)
		}
	}
	if len(pods.Items) != 6 {
		t.Errorf("%d pods left, want 6", len(pods.Items))
	}
}

func TestRecycleRespectsPodDisruptionBudget(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	w := createWorkload(t, k.Client, ns, "auth-service", 2, withGracePeriod(0))
	pdbs := k.Client.PolicyV1().PodDisruptionBudgets(ns)
	pdb, err := pdbs.Create(context.Background(), &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "auth-service", Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr(intstr.FromInt32(2)), Selector: w.deployment.Spec.Selector},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What the disruption controller would publish for 2 healthy pods of 2
	// required: no disruption allowed.
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 2, DesiredHealthy: 2, ExpectedPods: 2}
	if pdb, err = pdbs.UpdateStatus(context.Background(), pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Retries are bounded by count, so the refusal, not a deadline a busy
	// machine might reach first, is what ends them.
	ex := NewExecutor(k.Client, testLogger(t), WithBackoff(50*time.Millisecond, 400*time.Millisecond), WithMaxAttempts(3))
	req := Request{Kind: Recycle, Namespace: ns, Deployment: "auth-service", Pod: w.pods[0].Name, MaxFraction: 1, Timeout: 5 * time.Minute}
	res, err := ex.Run(context.Background(), req)
	if !errors.Is(err, ErrPDBBlocked) || Reason(err) != ReasonPDBBlocked {
		t.Fatalf("recycle under a blocking budget: %v (reason %q), want ErrPDBBlocked", err, Reason(err))
	}
	if !strings.Contains(err.Error(), "blocked by PodDisruptionBudget") || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Errorf("error %q should say it was blocked by the budget after 3 attempts", err)
	}
	if res.Changed {
		t.Error("Changed reported for a blocked eviction")
	}
	if p, err := k.Client.CoreV1().Pods(ns).Get(context.Background(), w.pods[0].Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("blocked pod was evicted: %v", err)
	}

	// The budget now allows one disruption: the same request goes through and
	// the API server spends the allowance.
	pdb.Status.DisruptionsAllowed = 1
	pdb.Status.DesiredHealthy = 1
	if _, err := pdbs.UpdateStatus(context.Background(), pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err = ex.Run(context.Background(), req)
	if err != nil || !res.Verified {
		t.Fatalf("recycle with an allowing budget: %+v, %v", res, err)
	}
	after, err := pdbs.Get(context.Background(), pdb.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.DisruptionsAllowed != 0 {
		t.Errorf("budget still allows %d disruptions: the eviction bypassed it", after.Status.DisruptionsAllowed)
	}
	if _, ok := after.Status.DisruptedPods[w.pods[0].Name]; !ok {
		t.Errorf("evicted pod not recorded in the budget's disruptedPods: %v", after.Status.DisruptedPods)
	}
}

func TestReloadCallsEveryReadyPodOfTheDeployment(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	port, servers := startReloadServers(t, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []int{200, 204, 200})
	w := createWorkload(t, k.Client, ns, "policy-service", 2, withPodIPs("127.0.0.1", "127.0.0.2"))
	createPod(t, k.Client, w.replicaSet, "policy-service-"+podTemplateHash+"-notrd", "127.0.0.3", false, nil)
	// Another workload's ready pod must not be called.
	createWorkload(t, k.Client, ns, "auth-service", 1, withPodIPs("127.0.0.3"))
	ex := NewExecutor(k.Client, testLogger(t))
	res, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "policy-service", ReloadPort: port, ReloadPath: "/-/reload"})
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !res.Changed || !res.Verified || !strings.Contains(res.Detail, "all 2 ready pods") {
		t.Errorf("result %+v", res)
	}
	for i, want := range []int64{1, 1, 0} {
		if got := servers[i].calls.Load(); got != want {
			t.Errorf("server 127.0.0.%d: %d calls, want %d", i+1, got, want)
		}
	}

	// Retries are bounded by count, not by the timeout, so a busy machine
	// sees the same attempts as an idle one.
	servers[1].status.Store(500)
	ex = NewExecutor(k.Client, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond), WithMaxAttempts(3))
	_, err = ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "policy-service", ReloadPort: port, ReloadPath: "/-/reload", Timeout: 5 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), w.pods[1].Name) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("reload with a pod answering 500: %v; want an error naming %s", err, w.pods[1].Name)
	}
	if n := servers[1].calls.Load(); n != 1+3 {
		t.Errorf("failing pod called %d times in total, want 1 + 3 attempts", n)
	}
}

// Concurrent restarts of one Deployment each carry the resourceVersion they
// checked; the losers of a race get a conflict, re-read and re-check, and
// every restart lands.
func TestConcurrentRestartsAllLand(t *testing.T) {
	k := kubeServer.Get(t)
	ns := createNamespace(t, k.Client)
	createWorkload(t, k.Client, ns, "auth-service", 0)
	before := getDeployment(t, k.Client, ns, "auth-service")
	ex := NewExecutor(k.Client, testLogger(t), WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	const n = 5
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ex.Run(context.Background(), Request{Kind: Restart, Namespace: ns, Deployment: "auth-service", Reason: fmt.Sprintf("alert %d", i)})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !results[i].Changed {
			t.Errorf("restart %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if g := getDeployment(t, k.Client, ns, "auth-service").Generation; g != before.Generation+n {
		t.Errorf("generation %d -> %d, want +%d", before.Generation, g, n)
	}
}
