package logfollow

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/kubecore"
	"github.com/warden-sre/warden/internal/testenv"
)

// TestPodLogFollowerFollowsSelectedPods uses fakePods: no test API server
// serves pod logs (there is no kubelet behind it), so the log streams are
// pipes the test writes to, and only the pod selection, stream options and
// line handling are exercised there. TestPodLogFollowerReadsLogRequests
// goes through kubecore's real requests.

// fakePod is a pod and its labels.
type fakePod struct {
	kubecore.Pod
	labels map[string]string
}

func testPod(name, uid string, labels map[string]string, phase string) fakePod {
	return fakePod{kubecore.Pod{
		Metadata: kubecore.ObjectMeta{Name: name, Namespace: "rust-security", UID: uid},
		Spec:     kubecore.PodSpec{Containers: []kubecore.Container{{Name: "auth-service"}, {Name: "sidecar"}}},
		Status:   kubecore.PodStatus{Phase: phase},
	}, labels}
}

// fakePods serves a pod list the test changes, and hands out one pipe per
// opened log stream, recording the options.
type fakePods struct {
	mu      sync.Mutex
	pods    []fakePod
	opened  map[string][]kubecore.LogOptions
	writers map[string]*io.PipeWriter
	closed  map[string]bool
}

func newFakePods(pods ...fakePod) *fakePods {
	return &fakePods{pods: pods, opened: map[string][]kubecore.LogOptions{}, writers: map[string]*io.PipeWriter{}, closed: map[string]bool{}}
}

func (f *fakePods) ListPods(_ context.Context, namespace string, o kubecore.ListOptions) (*kubecore.PodList, error) {
	sel, err := labels.Parse(o.LabelSelector)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	list := &kubecore.PodList{}
	for _, p := range f.pods {
		if p.Metadata.Namespace == namespace && sel.Matches(labels.Set(p.labels)) {
			list.Items = append(list.Items, p.Pod)
		}
	}
	return list, nil
}

func (f *fakePods) set(pods ...fakePod) {
	f.mu.Lock()
	f.pods = pods
	f.mu.Unlock()
}

func (f *fakePods) PodLogs(ctx context.Context, _, name string, o kubecore.LogOptions) (io.ReadCloser, error) {
	r, w := io.Pipe()
	f.mu.Lock()
	f.opened[name] = append(f.opened[name], o)
	f.writers[name] = w
	f.closed[name] = false
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		f.closed[name] = true
		f.mu.Unlock()
		_ = w.CloseWithError(ctx.Err())
	}()
	return r, nil
}

func (f *fakePods) writer(t *testing.T, pod string, opens int) *io.PipeWriter {
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

func (f *fakePods) options(pod string) []kubecore.LogOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.opened[pod])
}

func TestPodLogFollowerFollowsSelectedPods(t *testing.T) {
	sel := map[string]string{"app": "auth-service"}
	auth1 := testPod("auth-1", "u1", sel, kubecore.PodRunning)
	pending := testPod("auth-pending", "u2", sel, "Pending")
	other := testPod("policy-1", "u3", map[string]string{"app": "policy-service"}, kubecore.PodRunning)
	logs := newFakePods(auth1, pending, other)
	sink := &recordingSink{}
	p := NewPods(logs, PodOptions{
		Namespace: "rust-security", LabelSelector: "app=auth-service", Container: "auth-service",
		PollInterval: 20 * time.Millisecond, MaxLineBytes: 1000,
	}, sink, slog.New(slog.DiscardHandler))
	p.retryMin, p.retryMax = 10*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()

	// A pod present at start is read from now on, with timestamps.
	w1 := logs.writer(t, "auth-1", 1)
	first := logs.options("auth-1")[0]
	if first.TailLines == nil || *first.TailLines != 0 || !first.Follow || !first.Timestamps || first.Container != "auth-service" || !first.SinceTime.IsZero() {
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
	if resumed.TailLines != nil || !resumed.SinceTime.Equal(time.Date(2026, 11, 27, 12, 0, 1, 0, time.UTC)) {
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
	auth2 := testPod("auth-2", "u4", sel, kubecore.PodRunning)
	logs.set(auth1, pending, other, auth2)
	logs.writer(t, "auth-2", 1)
	if o := logs.options("auth-2")[0]; o.TailLines != nil || !o.SinceTime.IsZero() {
		t.Fatalf("new pod stream options = %+v", o)
	}
	logs.set(pending, other, auth2)
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

// TestPodLogFollowerReadsLogRequests goes through kubecore's real pod list
// and log requests, answered by an HTTP server standing in for the API
// server's pod log endpoint (which a test API server cannot serve: there
// is no kubelet behind it): the lines reach the sink, the body served again
// on every reconnect is not passed on twice, and the requests carry the
// stream options.
func TestPodLogFollowerReadsLogRequests(t *testing.T) {
	var mu sync.Mutex
	var requests []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/namespaces/rust-security/pods":
			if r.URL.Query().Get("labelSelector") != "app=auth-service" {
				http.Error(w, "unexpected selector", http.StatusBadRequest)
				return
			}
			_, _ = io.WriteString(w, `{"kind":"PodList","metadata":{},"items":[{"metadata":{"name":"auth-1","namespace":"rust-security","uid":"u1"},`+
				`"spec":{"containers":[{"name":"auth-service"}]},"status":{"phase":"Running"}}]}`)
		case "/api/v1/namespaces/rust-security/pods/auth-1/log":
			mu.Lock()
			requests = append(requests, r.URL.Query())
			mu.Unlock()
			_, _ = io.WriteString(w, "2026-11-27T12:00:00Z {\"event\":\"authentication_failed\",\"ip_address\":\"203.0.113.9\"}\n2026-11-27T12:00:01Z not json\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	client, err := kubecore.NewForConfig(&rest.Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
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
	first, second := requests[0].Encode(), requests[1].Encode()
	mu.Unlock()
	if want := "container=auth-service&follow=true&tailLines=0&timestamps=true"; first != want {
		t.Errorf("first request = %s, want %s", first, want)
	}
	if want := "container=auth-service&follow=true&sinceTime=2026-11-27T12%3A00%3A01Z&timestamps=true"; second != want {
		t.Errorf("second request = %s, want %s", second, want)
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
