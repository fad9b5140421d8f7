package remediator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// kubeServer is one API server for the package, started by the first test
// that needs it; each test works in its own namespace. redisServer likewise,
// for the one test that coordinates through Redis. With -short neither
// starts and the tests that need them are skipped.
var (
	kubeServer  = testenv.NewLazy(func() (*testenv.Kube, error) { return testenv.NewKube() }, (*testenv.Kube).Stop)
	redisServer = testenv.NewLazy(func() (*testenv.Redis, error) { return testenv.NewRedis() }, (*testenv.Redis).Stop)
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunAndStop(m, kubeServer, redisServer, symptomServer, alertmanagerServer))
}

// logBuffer collects a test's log lines; they are printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(substr string) int {
	return strings.Count(b.String(), substr)
}

var testLogs sync.Map // testing.TB -> *logBuffer

func newTestLogger(t testing.TB) *slog.Logger {
	v, loaded := testLogs.LoadOrStore(t, &logBuffer{})
	lb := v.(*logBuffer)
	if loaded {
		// Several remediators in one test share one log.
		return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Cleanup(func() {
		if t.Failed() {
			s := lb.String()
			if len(s) > 200000 {
				s = "...\n" + s[len(s)-200000:]
			}
			fmt.Fprintf(os.Stderr, "--- log of %s:\n%s", t.Name(), s)
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logsOf returns the log collected for t by startRemediator.
func logsOf(t testing.TB) *logBuffer {
	v, ok := testLogs.Load(t)
	if !ok {
		t.Fatal("no test logger")
	}
	return v.(*logBuffer)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recordingExecutor records requests instead of acting.
type recordingExecutor struct {
	mu    sync.Mutex
	reqs  []actions.Request
	err   error
	block chan struct{} // when set, Run waits for it
}

func (e *recordingExecutor) Run(ctx context.Context, req actions.Request) (actions.Result, error) {
	if e.block != nil {
		select {
		case <-e.block:
		case <-ctx.Done():
			return actions.Result{}, ctx.Err()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reqs = append(e.reqs, req)
	return actions.Result{Changed: !req.DryRun, Verified: !req.DryRun, Object: "Deployment/" + req.Deployment}, e.err
}

func (e *recordingExecutor) requests() []actions.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]actions.Request(nil), e.reqs...)
}

const testToken = "s3cret-token"

type testRemediator struct {
	*Remediator
	reg    *prometheus.Registry
	server *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// startRemediator runs a Remediator with its webhook on a loopback server.
func startRemediator(t testing.TB, policyYAML string, kube kubernetes.Interface, exec actions.Executor, mod func(*Options)) *testRemediator {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := Options{
		Kube:       kube,
		Executor:   exec,
		Logger:     newTestLogger(t),
		Registerer: reg,
		Identity:   "test-" + fmt.Sprint(time.Now().UnixNano()),
		Auth:       Auth{BearerToken: testToken},
	}
	if mod != nil {
		mod(&opts)
	}
	r, err := New(opts, mustPolicy(t, policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRemediator{Remediator: r, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { r.Run(ctx); close(tr.done) }()
	mux := http.NewServeMux()
	mux.Handle("/api/v1/alerts", r.WebhookHandler())
	mux.Handle("/webhook", r.WebhookHandler())
	mux.Handle("/-/ready", r.ReadyHandler())
	tr.server = httptest.NewServer(mux)
	t.Cleanup(func() {
		tr.server.Close()
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = r.Shutdown(sctx)
		cancel()
		<-tr.done
	})
	return tr
}

func payload(alerts ...amtemplate.Alert) []byte {
	msg := webhook.Message{
		Data: &amtemplate.Data{
			Receiver: "warden", Status: "firing", Alerts: alerts,
			GroupLabels: amtemplate.KV{}, CommonLabels: amtemplate.KV{}, CommonAnnotations: amtemplate.KV{},
			ExternalURL: "http://alertmanager:9093",
		},
		Version:  "4",
		GroupKey: `{}:{alertname="HighMemoryUsage"}`,
	}
	b, err := json.Marshal(msg)
	if err != nil {
		panic(err)
	}
	return b
}

func firing(name, fp string, startsAt time.Time, labels map[string]string) amtemplate.Alert {
	l := amtemplate.KV{"alertname": name}
	for k, v := range labels {
		l[k] = v
	}
	return amtemplate.Alert{Status: "firing", Labels: l, Annotations: amtemplate.KV{}, StartsAt: startsAt, Fingerprint: fp}
}

func post(t testing.TB, url string, body []byte, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

const declinePolicy = `
rules:
  - name: restart-auth
    matchers: ['alertname="HighMemoryUsage"']
    action: restart
    target: {namespace: rust-security, deployment: auth-service}
    allow: {namespaces: [rust-security], deployments: [auth-service]}
`

// kubeClient is a client for the shared API server with limits high enough
// for hundreds of deliveries per second.
func kubeClient(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 1000, 2000
	k, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// kubeClientFor is a client with the limits of cfg as they are.
func kubeClientFor(cfg *rest.Config) (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(cfg)
}

// setupTarget creates a namespace with one Deployment and returns the
// namespace name.
func setupTarget(t testing.TB, kube kubernetes.Interface, deployment string, mod func(*appsv1.Deployment)) string {
	t.Helper()
	ctx := context.Background()
	ns := "t-" + strings.ToLower(rand.String(8))
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createDeployment(t, kube, ns, deployment, 2, mod)
	return ns
}

// createDeployment creates a Deployment with replicas and, the test API
// server having no deployment controller, reports its rollout finished,
// so the rollout gate lets actions through.
func createDeployment(t testing.TB, kube kubernetes.Interface, ns, name string, replicas int32, mod func(*appsv1.Deployment)) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	if mod != nil {
		mod(d)
	}
	created, err := kube.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	completeRollout(t, kube, created)
}

// watchRestarts counts changes of the pod template's restartedAt annotation.
func watchRestarts(t testing.TB, kube kubernetes.Interface, ns, name string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	w, err := kube.AppsV1().Deployments(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	go func() {
		last := ""
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			at := d.Spec.Template.Annotations[actions.RestartedAtAnnotation]
			if at != last {
				if at != "" {
					n.Add(1)
				}
				last = at
			}
		}
	}()
	return &n
}

func countEvents(t testing.TB, kube kubernetes.Interface, ns, reason string) int {
	t.Helper()
	evs, err := kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs.Items {
		if e.Reason == reason {
			n++
		}
	}
	return n
}

// waitEvents waits until the namespace holds exactly n Events with the
// reason: the recorder writes them in the background.
func waitEvents(t testing.TB, kube kubernetes.Interface, ns, reason string, n int) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, fmt.Sprintf("%d %s events", n, reason), func() bool {
		return countEvents(t, kube, ns, reason) == n
	})
}

func restartPolicy(ns string, extra string) string {
	return fmt.Sprintf(`
defaults: {cooldown: 3s, timeout: 20s, retry_for: 1m}
rate_limit: {actions_per_hour: 0}
breaker: {failures: 3, refires: 5, window: 1h, open_for: 1h}
%s
rules:
  - name: restart-on-memory
    matchers: ['alertname="HighMemoryUsage"']
    action: restart
    target: {namespace: '{{ .Labels.namespace }}', deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [%s], deployments: [auth-service]}
`, extra, ns)
}

func decisions(trs ...*testRemediator) float64 {
	var n float64
	for _, tr := range trs {
		n += sumCounter(tr.metrics.actions) + sumCounter(tr.metrics.skipped)
	}
	return n
}

// sumCounter adds up every series of a counter vector.
func sumCounter(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 256)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err == nil {
			sum += pb.GetCounter().GetValue()
		}
	}
	return sum
}

// testClock is a clock the test moves forward, so that cooldowns are
// crossed by the test's decision rather than by waiting.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
