package actions

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// workload is a Deployment with one ReplicaSet and its pods, created by hand:
// the test API server runs no controllers.
type workload struct {
	deployment *appsv1.Deployment
	replicaSet *appsv1.ReplicaSet
	pods       []*corev1.Pod
}

const podTemplateHash = "5d8f7c9b6"

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ACTIONS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func deploymentObject(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
}

type workloadOption func(*workloadSpec)

type workloadSpec struct {
	pods     int
	podIPs   []string
	ready    bool
	mutate   func(*appsv1.Deployment)
	podGrace *int64
}

func withPodIPs(ips ...string) workloadOption {
	return func(s *workloadSpec) { s.podIPs = ips }
}
func withNotReady() workloadOption { return func(s *workloadSpec) { s.ready = false } }
func withDeployment(f func(*appsv1.Deployment)) workloadOption {
	return func(s *workloadSpec) { s.mutate = f }
}
func withGracePeriod(seconds int64) workloadOption {
	return func(s *workloadSpec) { s.podGrace = &seconds }
}

// createWorkload creates Deployment name with `pods` running, Ready pods
// owned by a ReplicaSet named the way the deployment controller names it.
func createWorkload(t testing.TB, client kubernetes.Interface, ns, name string, pods int, opts ...workloadOption) workload {
	t.Helper()
	ctx := context.Background()
	spec := workloadSpec{pods: pods, ready: true}
	for _, o := range opts {
		o(&spec)
	}
	d := deploymentObject(ns, name, int32(pods))
	if spec.mutate != nil {
		spec.mutate(d)
	}
	d, err := client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s: %v", name, err)
	}
	labels := map[string]string{"app": name, appsv1.DefaultDeploymentUniqueLabelKey: podTemplateHash}
	controller := true
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: name + "-" + podTemplateHash, Namespace: ns, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &controller}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: d.Spec.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: d.Spec.Template.Spec},
		},
	}
	rs, err = client.AppsV1().ReplicaSets(ns).Create(ctx, rs, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create replicaset: %v", err)
	}
	w := workload{deployment: d, replicaSet: rs}
	for i := range spec.pods {
		ip := "10.1.0." + fmt.Sprint(i+10)
		if i < len(spec.podIPs) {
			ip = spec.podIPs[i]
		}
		p := createPod(t, client, rs, fmt.Sprintf("%s-%s-%c%c%c%c%c", name, podTemplateHash, 'a'+i, 'b', 'c', 'd', 'e'), ip, spec.ready, spec.podGrace)
		w.pods = append(w.pods, p)
	}
	return w
}

func createPod(t testing.TB, client kubernetes.Interface, rs *appsv1.ReplicaSet, name, ip string, ready bool, grace *int64) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	controller := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: rs.Namespace, Labels: rs.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &controller}},
		},
		Spec: *rs.Spec.Template.Spec.DeepCopy(),
	}
	p.Spec.NodeName = "node-1"
	p.Spec.TerminationGracePeriodSeconds = grace
	p, err := client.CoreV1().Pods(rs.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	now := metav1.Now()
	p.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: readyStatus, LastTransitionTime: now},
		},
	}
	p, err = client.CoreV1().Pods(rs.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("set status of pod %s: %v", name, err)
	}
	return p
}

var nsCounter atomic.Int64
var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// nsName derives a unique namespace name from the test's name.
func nsName(t testing.TB) string {
	n := nonName.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return strings.Trim(fmt.Sprintf("t%d-%s", nsCounter.Add(1), strings.Trim(n, "-")), "-")
}

func createNamespace(t testing.TB, client kubernetes.Interface) string {
	t.Helper()
	name := nsName(t)
	_, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// reloadServer answers reload requests on 127.0.0.x:port with status and
// counts them.
type reloadServer struct {
	calls  atomic.Int64
	status atomic.Int64
	method atomic.Value
	path   atomic.Value
}

func (s *reloadServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	s.method.Store(r.Method)
	s.path.Store(r.URL.RequestURI())
	w.WriteHeader(int(s.status.Load()))
}

// startReloadServers listens on the same port on each of the given loopback
// addresses (127.0.0.1, 127.0.0.2, ...), so pods with different IPs can share
// the one port a reload request names.
func startReloadServers(t testing.TB, ips []string, statuses []int) (int, []*reloadServer) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		listeners := []net.Listener{first}
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			listeners = append(listeners, l)
		}
		if !ok {
			for _, l := range listeners {
				l.Close()
			}
			continue
		}
		servers := make([]*reloadServer, len(ips))
		for i, l := range listeners {
			rs := &reloadServer{}
			rs.status.Store(int64(statuses[i]))
			servers[i] = rs
			srv := &http.Server{Handler: rs, ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		}
		return port, servers
	}
	t.Fatal("no port free on all loopback addresses")
	return 0, nil
}

// freeLoopbackPort returns a port nothing listens on (for refused connections).
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func ptr[T any](v T) *T { return &v }
