package demo

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/internal/testenv"
)

// restartedAtAnnotation is what `kubectl rollout restart` (and the
// remediator) sets on the pod template.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// workload is a Deployment of the demo cluster. Those with a process are
// "run" by the kubelet stand-in: a new rollout restarts the process.
type workload struct {
	name  string
	image string
	proc  *testenv.Process
	// healthURL is polled after a (re)start until it answers 200.
	healthURL string
	// afterStart runs after every (re)start, e.g. to apply a fault that a
	// restart does not fix.
	afterStart func(ctx context.Context) error

	template string // restartedAt of the running pod template
	pod      string
	restarts int
	rollouts []time.Time
}

// kubelet stands in for the controller-manager and the kubelet of a real
// cluster, which the demo's API server does not have: it keeps a
// ReplicaSet and a Running Pod for every Deployment, and when a rollout
// restart changes a Deployment's pod template it restarts the process
// behind it (faults are gone, as in a new container), replaces the Pod and
// reports the rollout complete in the Deployment's status.
type kubelet struct {
	client kubernetes.Interface
	ns     string
	tl     *Timeline

	mu        sync.Mutex
	workloads map[string]*workload
}

func newKubelet(client kubernetes.Interface, ns string, tl *Timeline) *kubelet {
	return &kubelet{client: client, ns: ns, tl: tl, workloads: map[string]*workload{}}
}

// add creates the Deployment with its ReplicaSet and Pod.
func (k *kubelet) add(ctx context.Context, w *workload) error {
	labels := map[string]string{"app": w.name, "app.kubernetes.io/name": w.name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: k.ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": w.name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers:                   []corev1.Container{{Name: w.name, Image: w.image}},
				},
			},
		},
	}
	created, err := k.client.AppsV1().Deployments(k.ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create deployment %s: %w", w.name, err)
	}
	k.mu.Lock()
	k.workloads[w.name] = w
	k.mu.Unlock()
	return k.roll(ctx, w, created)
}

// Restarts returns how many rollout restarts of the Deployment the
// kubelet carried out.
func (k *kubelet) Restarts(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if w, ok := k.workloads[name]; ok {
		return w.restarts
	}
	return 0
}

// run watches the Deployments (by polling; the demo has a handful) until
// ctx ends.
func (k *kubelet) run(ctx context.Context) {
	everyTick(ctx, 200*time.Millisecond, func(int) {
		list, err := k.client.AppsV1().Deployments(k.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		for i := range list.Items {
			d := &list.Items[i]
			k.mu.Lock()
			w, ok := k.workloads[d.Name]
			k.mu.Unlock()
			if !ok || d.Spec.Template.Annotations[restartedAtAnnotation] == w.template {
				continue
			}
			k.tl.Printf("KUBELET", "rollout of Deployment %s (restartedAt=%s): restarting it", d.Name, d.Spec.Template.Annotations[restartedAtAnnotation])
			if err := k.roll(ctx, w, d); err != nil {
				k.tl.Printf("KUBELET", "rollout of %s failed: %v", d.Name, err)
			}
		}
	})
}

// roll brings the Deployment's current pod template up: (re)starts the
// process, replaces ReplicaSet and Pod, and writes the status a real
// controller would.
func (k *kubelet) roll(ctx context.Context, w *workload, d *appsv1.Deployment) error {
	at := d.Spec.Template.Annotations[restartedAtAnnotation]
	first := w.pod == ""
	if w.proc != nil {
		if err := startHealthy(ctx, w.name, w.proc, w.healthURL); err != nil {
			return err
		}
		if w.afterStart != nil {
			if err := w.afterStart(ctx); err != nil {
				return err
			}
		}
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%s", w.name, at)
	hash := fmt.Sprintf("%08x", h.Sum32())[:8]
	rsName := w.name + "-" + hash
	labels := map[string]string{"app": w.name, "app.kubernetes.io/name": w.name, "pod-template-hash": hash}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: rsName, Namespace: k.ns, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true)}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: d.Spec.Template.Annotations}, Spec: d.Spec.Template.Spec},
		},
	}
	createdRS, err := k.client.AppsV1().ReplicaSets(k.ns).Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		createdRS, err = k.client.AppsV1().ReplicaSets(k.ns).Get(ctx, rsName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("replicaset %s: %w", rsName, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: rsName + "-", Namespace: k.ns, Labels: labels, Annotations: d.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rsName, UID: createdRS.UID, Controller: ptr.To(true)}},
		},
		Spec: *d.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = "demo-node"
	newPod, err := k.client.CoreV1().Pods(k.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("pod for %s: %w", w.name, err)
	}
	now := metav1.Now()
	newPod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     "127.0.0.1",
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: w.name, Ready: true, Image: w.image, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	if _, err := k.client.CoreV1().Pods(k.ns).UpdateStatus(ctx, newPod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod status %s: %w", newPod.Name, err)
	}
	if w.pod != "" {
		if err := k.client.CoreV1().Pods(k.ns).Delete(ctx, w.pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete old pod %s: %w", w.pod, err)
		}
	}
	// Status of the Deployment as the deployment controller would report a
	// finished rollout.
	for try := 0; try < 5; try++ {
		cur, err := k.client.AppsV1().Deployments(k.ns).Get(ctx, d.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("deployment %s: %w", d.Name, err)
		}
		cur.Status = appsv1.DeploymentStatus{
			ObservedGeneration: cur.Generation,
			Replicas:           1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", LastUpdateTime: now, LastTransitionTime: now},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", rsName), LastUpdateTime: now, LastTransitionTime: now},
			},
		}
		_, err = k.client.AppsV1().Deployments(k.ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("deployment status %s: %w", d.Name, err)
		}
	}
	k.mu.Lock()
	old := w.pod
	w.template, w.pod = at, newPod.Name
	if !first {
		w.restarts++
		w.rollouts = append(w.rollouts, time.Now())
	}
	k.mu.Unlock()
	if !first {
		k.tl.Printf("KUBELET", "%s: pod %s replaced by %s, Running and Ready", w.name, old, newPod.Name)
	}
	return nil
}
