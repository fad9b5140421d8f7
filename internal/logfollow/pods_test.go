package logfollow

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// These tests use client-go's fake clientset: no test API server serves pod
// logs (there is no kubelet behind it), so the log streams are replaced by
// pipes the test writes to, and only the pod selection, stream options and
// line handling are exercised here.

func testPod(name, uid string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "rust-security", UID: types.UID(uid), Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "auth-service"}, {Name: "sidecar"}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// fakePodLogs hands out one pipe per opened stream and records the options.
type fakePodLogs struct {
	mu      sync.Mutex
	opened  map[string][]corev1.PodLogOptions
	writers map[string]*io.PipeWriter
	closed  map[string]bool
}

func newFakePodLogs() *fakePodLogs {
	return &fakePodLogs{opened: map[string][]corev1.PodLogOptions{}, writers: map[string]*io.PipeWriter{}, closed: map[string]bool{}}
}

func (f *fakePodLogs) open(ctx context.Context, pod *corev1.Pod, o *corev1.PodLogOptions) (io.ReadCloser, error) {
	r, w := io.Pipe()
	f.mu.Lock()
	f.opened[pod.Name] = append(f.opened[pod.Name], *o)
	f.writers[pod.Name] = w
	f.closed[pod.Name] = false
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		f.closed[pod.Name] = true
		f.mu.Unlock()
		_ = w.CloseWithError(ctx.Err())
	}()
	return r, nil
}

func (f *fakePodLogs) writer(t *testing.T, pod string, opens int) *io.PipeWriter {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "stream of "+pod+" opened", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.opened[pod]) >= opens
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writers[pod]
}

func (f *fakePodLogs) options(pod string) []corev1.PodLogOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.opened[pod])
}

func TestPodLogFollowerFollowsSelectedPods(t *testing.T) {
	sel := map[string]string{"app": "auth-service"}
	client := fake.NewClientset(
		testPod("auth-1", "u1", sel, corev1.PodRunning),
		testPod("auth-pending", "u2", sel, corev1.PodPending),
		testPod("policy-1", "u3", map[string]string{"app": "policy-service"}, corev1.PodRunning),
	)
	sink := &recordingSink{}
	p := NewPods(client, PodOptions{
		Namespace: "rust-security", LabelSelector: "app=auth-service", Container: "auth-service",
		PollInterval: 20 * time.Millisecond, MaxLineBytes: 1000,
	}, sink, slog.New(slog.DiscardHandler))
	p.retryMin, p.retryMax = 10*time.Millisecond, 10*time.Millisecond
	logs := newFakePodLogs()
	p.openLogs = logs.open
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()

	// A pod present at start is read from now on, with timestamps.
	w1 := logs.writer(t, "auth-1", 1)
	first := logs.options("auth-1")[0]
	if first.TailLines == nil || *first.TailLines != 0 || !first.Follow || !first.Timestamps || first.Container != "auth-service" || first.SinceTime != nil {
		t.Fatalf("first stream options = %+v", first)
	}
	if _, err := io.WriteString(w1, "2026-11-27T12:00:00.100000000Z {\"event\":\"a\"}\n2026-11-27T12:00:01.200000000Z {\"event\":\"b\"}\n"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "two lines", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.lines) == 2 })
	if lines, _ := sink.take(); !slices.Equal(lines, []string{`{"event":"a"}`, `{"event":"b"}`}) {
		t.Fatalf("lines = %q", lines)
	}

	// The stream breaks in the middle of a line: it is reopened from the
	// last whole line's time, lines already read (same second) are not
	// repeated, and the cut line arrives whole.
	if _, err := io.WriteString(w1, "2026-11-27T12:00:01.500000000Z {\"event\":\"cu"); err != nil {
		t.Fatal(err)
	}
	_ = w1.Close()
	w1 = logs.writer(t, "auth-1", 2)
	resumed := logs.options("auth-1")[1]
	if resumed.SinceTime == nil || resumed.TailLines != nil || !resumed.SinceTime.Time.Equal(time.Date(2026, 11, 27, 12, 0, 1, 0, time.UTC)) {
		t.Fatalf("resumed stream options = %+v", resumed)
	}
	if _, err := io.WriteString(w1, "2026-11-27T12:00:01.200000000Z {\"event\":\"b\"}\n2026-11-27T12:00:01.500000000Z {\"event\":\"cut\"}\n2026-11-27T12:00:02Z {\"event\":\"c\"}\n"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "two new lines", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.lines) == 2 })
	if lines, reasons := sink.take(); !slices.Equal(lines, []string{`{"event":"cut"}`, `{"event":"c"}`}) || len(reasons) != 0 {
		t.Fatalf("lines after resume = %q", lines)
	}

	// A pod appearing later is read from its start (no TailLines); a pod
	// that goes away has its stream closed.
	if _, err := client.CoreV1().Pods("rust-security").Create(ctx, testPod("auth-2", "u4", sel, corev1.PodRunning), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	logs.writer(t, "auth-2", 1)
	if o := logs.options("auth-2")[0]; o.TailLines != nil || o.SinceTime != nil {
		t.Fatalf("new pod stream options = %+v", o)
	}
	if err := client.CoreV1().Pods("rust-security").Delete(ctx, "auth-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "stream of deleted pod closed", func() bool { logs.mu.Lock(); defer logs.mu.Unlock(); return logs.closed["auth-1"] })
	testenv.WaitFor(t, 10*time.Second, "one pod followed", func() bool { return p.followed() == 1 })
	if len(logs.options("auth-pending")) != 0 || len(logs.options("policy-1")) != 0 {
		t.Fatal("followed a pending pod or a pod outside the selector")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("follower did not stop")
	}
}

// TestPodLogFollowerUsesGetLogs goes through the real GetLogs request of
// the fake clientset, whose reactor serves a log body: the lines reach the
// sink, and the body served again on every reconnect is not passed on
// twice.
func TestPodLogFollowerUsesGetLogs(t *testing.T) {
	client := fake.NewClientset(testPod("auth-1", "u1", map[string]string{"app": "auth-service"}, corev1.PodRunning))
	var mu sync.Mutex
	var requests []corev1.PodLogOptions
	client.PrependReactor("get", "pods", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "log" || action.GetNamespace() != "rust-security" {
			return false, nil, nil
		}
		mu.Lock()
		requests = append(requests, *action.(clienttesting.GenericAction).GetValue().(*corev1.PodLogOptions))
		mu.Unlock()
		return true, &runtime.Unknown{Raw: []byte("2026-11-27T12:00:00Z {\"event\":\"authentication_failed\",\"ip_address\":\"203.0.113.9\"}\n2026-11-27T12:00:01Z not json\n")}, nil
	})
	sink := &recordingSink{}
	p := NewPods(client, PodOptions{Namespace: "rust-security", LabelSelector: "app=auth-service", PollInterval: time.Second, MaxLineBytes: 1000}, sink, slog.New(slog.DiscardHandler))
	p.retryMin, p.retryMax = 10*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.WaitFor(t, 10*time.Second, "log stream reopened twice", func() bool { mu.Lock(); defer mu.Unlock(); return len(requests) >= 3 })
	if lines, reasons := sink.take(); !slices.Equal(lines, []string{`{"event":"authentication_failed","ip_address":"203.0.113.9"}`, "not json"}) || len(reasons) != 0 {
		t.Errorf("lines = %q, dropped %q; want each line once", lines, reasons)
	}
	mu.Lock()
	first, second := requests[0], requests[1]
	mu.Unlock()
	if !first.Follow || !first.Timestamps || first.TailLines == nil || *first.TailLines != 0 || first.Container != "auth-service" {
		t.Errorf("first request = %+v", first)
	}
	if second.SinceTime == nil || !second.SinceTime.Time.Equal(time.Date(2026, 11, 27, 12, 0, 1, 0, time.UTC)) {
		t.Errorf("second request = %+v", second)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("list error: %v", err)
	}
}

// followed is the number of pods whose logs are being read.
func (p *Pods) followed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.streams)
}
