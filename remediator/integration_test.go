package remediator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

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

// setupTarget creates a namespace with one Deployment and returns the
// namespace name.
func setupTarget(t testing.TB, kube kubernetes.Interface, deployment string, mod func(*appsv1.Deployment)) string {
	t.Helper()
	ctx := context.Background()
	ns := "t-" + strings.ToLower(rand.String(8))
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": deployment}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: deployment, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
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
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
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

func TestExactlyOnceAcrossReplicasAndDeliveries(t *testing.T) {
	k := sharedKube(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	restarts := watchRestarts(t, admin, ns, "auth-service")
	// The cooldown leaves room for slow machines (and -race) between the
	// first action and the refire that must fall inside it.
	const cooldown = 10 * time.Second
	policy := strings.Replace(restartPolicy(ns, ""), "cooldown: 3s", "cooldown: 10s", 1)

	var replicas []*testRemediator
	for i := range 3 {
		kube := kubeClient(t, k.Config)
		exec := actions.NewExecutor(kube, discardLogger(), actions.WithIdentity(fmt.Sprintf("replica-%d", i)))
		replicas = append(replicas, startRemediator(t, policy, kube, exec, func(o *Options) {
			o.Identity = fmt.Sprintf("replica-%d", i)
			o.Workers = 8
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
	waitFor(t, 60*time.Second, "all 600 deliveries to be decided", func() bool { return decisions(replicas...) == 3*deliveries })
	time.Sleep(500 * time.Millisecond) // let the watch catch up

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
	if n := countEvents(t, admin, ns, "Remediated"); n != 1 {
		t.Fatalf("%d Remediated events, want 1", n)
	}
	lease, err := admin.CoordinationV1().Leases(ns).Get(context.Background(), "warden-deployment-auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("coordination lease: %v", err)
	}
	if got := lease.Annotations[annoLastOccurrence]; got != occurrenceKey("a1b2c3d4e5f60718", startsAt, "restart") {
		t.Fatalf("lease records occurrence %q", got)
	}
	firstAction, err := time.Parse(time.RFC3339Nano, lease.Annotations[annoLastActionTime])
	if err != nil {
		t.Fatal(err)
	}

	// The alert resolves, then fires again with a new startsAt within the
	// cooldown: skipped. After the cooldown: a second restart.
	resolved := firing("HighMemoryUsage", "a1b2c3d4e5f60718", startsAt, labels)
	resolved.Status, resolved.EndsAt = "resolved", time.Now()
	tr := replicas[1]
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(resolved), nil); code != 202 {
		t.Fatalf("resolved: %d", code)
	}
	waitFor(t, 10*time.Second, "resolution to be recorded", func() bool { return countEvents(t, admin, ns, "AlertResolved") == 1 })
	if time.Since(firstAction) > cooldown-2*time.Second {
		t.Fatalf("test too slow: %s since the first action, cannot check the %s cooldown", time.Since(firstAction), cooldown)
	}
	second := firing("HighMemoryUsage", "a1b2c3d4e5f60718", time.Now().Truncate(time.Second), labels)
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(second), nil); code != 202 {
		t.Fatalf("refire: %d", code)
	}
	waitFor(t, 10*time.Second, "cooldown skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonCooldown)) == 1
	})
	time.Sleep(time.Until(firstAction.Add(cooldown + 200*time.Millisecond)))
	third := firing("HighMemoryUsage", "a1b2c3d4e5f60718", time.Now().Truncate(time.Second).Add(time.Second), labels)
	for _, r := range replicas { // every replica receives it; one acts
		if code, _, _ := post(t, r.server.URL+"/api/v1/alerts", payload(third), nil); code != 202 {
			t.Fatalf("refire after cooldown: %d", code)
		}
	}
	waitFor(t, 20*time.Second, "second restart", func() bool { return restarts.Load() == 2 })
	waitFor(t, 10*time.Second, "all decisions", func() bool { return decisions(replicas...) == 3*deliveries+1+3 }) // resolved is not a metric
	time.Sleep(300 * time.Millisecond)
	if n := restarts.Load(); n != 2 {
		t.Fatalf("restartedAt changed %d times, want 2", n)
	}
	if n := countEvents(t, admin, ns, "Remediated"); n != 2 {
		t.Fatalf("%d Remediated events, want 2", n)
	}
}

func TestBreakerOpensAfterRepeatedFailures(t *testing.T) {
	k := sharedKube(t)
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
		waitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "failed")); got != 3 {
		t.Fatalf("failed restarts %v, want 3", got)
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonBreakerOpen)); got != 1 {
		t.Fatalf("breaker_open skips %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.breakerOpen.WithLabelValues(ns, "deployment/auth-service")); got != 1 {
		t.Fatalf("warden_remediator_breaker_open = %v, want 1", got)
	}
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 1 {
		t.Fatalf("warden_remediator_escalations_total = %v, want 1", got)
	}
	if n := logsOf(t).count("escalating to Level 2"); n != 1 {
		t.Fatalf("%d escalation log lines, want 1", n)
	}
	if n := countEvents(t, kube, ns, "RemediationEscalated"); n != 1 {
		t.Fatalf("%d RemediationEscalated events, want 1", n)
	}
	if n := countEvents(t, kube, ns, "RemediationFailed"); n != 3 {
		t.Fatalf("%d RemediationFailed events, want 3", n)
	}
}

func TestBreakerOpensAfterRefires(t *testing.T) {
	k := sharedKube(t)
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
		waitFor(t, 30*time.Second, "decision", func() bool { return decisions(tr) == float64(i+1) })
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 2 {
		t.Fatalf("successful restarts %v, want 2", got)
	}
	if got := testutil.ToFloat64(tr.metrics.breakerOpen.WithLabelValues(ns, "deployment/auth-service")); got != 1 {
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
	waitFor(t, 10*time.Second, "breaker skip on another replica", func() bool {
		return testutil.ToFloat64(other.metrics.skipped.WithLabelValues(ReasonBreakerOpen)) == 1
	})
}

func TestOptOutAndDryRunChangeNothing(t *testing.T) {
	k := sharedKube(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	restarts := watchRestarts(t, kube, ns, "auth-service")
	tr := startRemediator(t, restartPolicy(ns, "dry_run: true"), kube, actions.NewExecutor(kube, discardLogger()), nil)
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	a := firing("HighMemoryUsage", "d1", time.Now().Truncate(time.Second), labels)
	for range 3 {
		post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	}
	waitFor(t, 10*time.Second, "dry-run decisions", func() bool { return decisions(tr) == 3 })
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
	tr.SetPolicy(mustPolicy(t, restartPolicy(ns, "")))
	post(t, tr.server.URL+"/api/v1/alerts", payload(firing("HighMemoryUsage", "d2", time.Now(), labels)), nil)
	waitFor(t, 10*time.Second, "opt-out skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonOptedOut)) == 1
	})
	time.Sleep(200 * time.Millisecond)
	if n := restarts.Load(); n != 0 {
		t.Fatalf("restartedAt changed %d times in dry-run/opt-out", n)
	}
}

func TestRefusedTargetIsRecorded(t *testing.T) {
	k := sharedKube(t)
	kube := kubeClient(t, k.Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	other := setupTarget(t, kube, "auth-service", nil)
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	// The alert names a namespace outside the allowlist.
	a := firing("HighMemoryUsage", "bad1", time.Now(), map[string]string{"namespace": other, "deployment": "auth-service"})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("refused alert must still be acknowledged, got %d", code)
	}
	waitFor(t, 10*time.Second, "not_allowed skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonNotAllowed)) == 1
	})
	if !strings.Contains(logsOf(t).String(), `reason=not_allowed detail="namespace \"`+other+`\" is not in allow.namespaces"`) {
		t.Fatalf("refusal not logged:\n%s", logsOf(t).String())
	}
}

// tcpProxy forwards loopback connections to the API server and can be
// taken down and brought back on the same port.
type tcpProxy struct {
	addr, backend string
	mu            sync.Mutex
	ln            net.Listener
	conns         map[net.Conn]struct{}
}

func (p *tcpProxy) up(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[b] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

func TestAlertIsNotLostWhileAPIServerIsUnreachable(t *testing.T) {
	k := sharedKube(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	restarts := watchRestarts(t, admin, ns, "auth-service")

	apiURL, err := url.Parse(k.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: "127.0.0.1:0", backend: apiURL.Host, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(p.down)
	cfg := rest.CopyConfig(k.Config)
	cfg.Host = "https://" + p.addr
	cfg.Timeout = 2 * time.Second
	kube := kubeClient(t, cfg)
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)

	p.down()
	a := firing("HighMemoryUsage", "0utage", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	if code != 202 {
		t.Fatalf("webhook while the API server is unreachable: %d %s, want 202 (queued)", code, body)
	}
	waitFor(t, 20*time.Second, "a failed attempt to reach the API server", func() bool {
		return strings.Contains(logsOf(t).String(), "coordination store unavailable, retrying")
	})
	// Stay down through several retries; the webhook keeps answering.
	time.Sleep(3 * time.Second)
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("repeat while unreachable: %d, want 202", code)
	}
	if n := restarts.Load(); n != 0 {
		t.Fatal("restarted while the API server was unreachable")
	}
	if n := logsOf(t).count("coordination store unavailable, retrying"); n < 3 {
		t.Fatalf("%d retries logged in 3 s, want several", n)
	}
	p.up(t)
	waitFor(t, 40*time.Second, "the queued alert to be acted on once the API server is back", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
	// The repeat delivered during the outage is the same occurrence.
	waitFor(t, 20*time.Second, "the repeat to be recognised", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDuplicate)) == 1
	})
	if n := restarts.Load(); n != 1 {
		t.Fatalf("restartedAt changed %d times, want 1", n)
	}
}

func TestFlushCacheCoordinatesThroughRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	ctx := context.Background()
	db := func(n int) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr, DB: n})
		t.Cleanup(func() { c.Close() })
		return c
	}
	cache, sessions, coord := db(2), db(3), db(0)
	fill := func(c *redis.Client, n int) {
		for i := range n {
			if err := c.Set(ctx, fmt.Sprint("k", i), "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	fill(cache, 10)
	fill(sessions, 7)
	policy := fmt.Sprintf(`
defaults: {cooldown: 1h, timeout: 10s}
redis:
  - {name: cache, address: '%[1]s', db: 2, coordination_db: 0, enabled: true}
  - {name: sessions, address: '%[1]s', db: 3, coordination_db: 0}
rules:
  - name: flush
    matchers: ['alertname="CacheCorrupt"']
    action: flush-cache
    target: {redis: '{{ .Labels.cache }}'}
    allow: {redis_targets: [cache, sessions]}
`, rs.Addr)
	exec := actions.NewExecutor(nil, discardLogger())
	var replicas []*testRemediator
	for range 2 {
		replicas = append(replicas, startRemediator(t, policy, fake.NewClientset(), exec, nil))
	}
	body := payload(firing("CacheCorrupt", "cafe01", time.Now().Truncate(time.Second), map[string]string{"cache": "cache"}))
	var wg sync.WaitGroup
	for _, tr := range replicas {
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					post(t, tr.server.URL+"/api/v1/alerts", body, nil)
				}
			}()
		}
	}
	wg.Wait()
	waitFor(t, 30*time.Second, "100 decisions", func() bool { return decisions(replicas...) == 100 })
	var flushed float64
	for _, tr := range replicas {
		flushed += testutil.ToFloat64(tr.metrics.actions.WithLabelValues("flush-cache", "success"))
	}
	if flushed != 1 {
		t.Fatalf("flushes %v, want exactly 1 for 100 deliveries", flushed)
	}
	if n := cache.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("db 2 has %d keys after the flush", n)
	}
	if n := sessions.DBSize(ctx).Val(); n != 7 {
		t.Fatalf("db 3 has %d keys, want 7 (only the configured database is flushed)", n)
	}
	key := redisStateKey(target{Kind: "redis", Name: "cache"})
	// No expiry: a volatile-* eviction policy on a full Redis would
	// otherwise evict the very record that prevents a second flush.
	if ttl := coord.PTTL(ctx, key).Val(); ttl != -1 {
		t.Fatalf("coordination key %s: ttl %s, want none (-1)", key, ttl)
	}
	if got := coord.HGet(ctx, key, annoLastOccurrence).Val(); !strings.HasPrefix(got, "cafe01@") {
		t.Fatalf("coordination key records %q", got)
	}

	// A flush on the target without enabled: true is refused and recorded.
	tr := replicas[0]
	post(t, tr.server.URL+"/api/v1/alerts", payload(firing("CacheCorrupt", "cafe02", time.Now(), map[string]string{"cache": "sessions"})), nil)
	waitFor(t, 10*time.Second, "disabled skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDisabled)) == 1
	})
	if n := sessions.DBSize(ctx).Val(); n != 7 {
		t.Fatalf("disabled target flushed: %d keys left", n)
	}
}

// BenchmarkReceiptToKubernetesWrite measures, against the real API server,
// the time from posting an alert to the Deployment change being observed
// through a watch (webhook, queue, Lease claim, scale write).
func BenchmarkReceiptToKubernetesWrite(b *testing.B) {
	k := sharedKube(b)
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

// TestRemediatorWorksWithShippedRBAC runs the remediator as a user bound only
// to the Role in deploy/remediator/rbac.yaml: claim (Lease), action, Event.
func TestRemediatorWorksWithShippedRBAC(t *testing.T) {
	k := sharedKube(t)
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
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighMemoryUsage", "5afe", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	for range 3 {
		post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	}
	waitFor(t, 20*time.Second, "decisions", func() bool { return decisions(tr) == 3 })
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 1 {
		t.Fatalf("restart as the restricted user: %v successes, want 1", got)
	}
	waitFor(t, 5*time.Second, "restart", func() bool { return restarts.Load() == 1 })
	if n := countEvents(t, admin, ns, "Remediated"); n != 1 {
		t.Fatalf("%d Remediated events written by the restricted user, want 1", n)
	}
	if strings.Contains(logsOf(t).String(), "cannot record event") {
		t.Fatalf("event creation failed under the shipped RBAC:\n%s", logsOf(t).String())
	}
}

// TestRealAlertmanagerDeliveriesActOnce sends an alert through a real
// Alertmanager, which repeats the notification every 2 s with the bearer
// token from a file: its payload decodes, and the repeats are recognised as
// one occurrence.
func TestRealAlertmanagerDeliveriesActOnce(t *testing.T) {
	k := sharedKube(t)
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
	waitFor(t, 30*time.Second, "three deliveries from Alertmanager", func() bool { return testutil.ToFloat64(accepted) >= 3 })
	// A 202 means queued; the decision on the last delivery may still be
	// under way.
	duplicates := tr.metrics.skipped.WithLabelValues(ReasonDuplicate)
	waitFor(t, 10*time.Second, "the repeats to be recognised as duplicates", func() bool { return testutil.ToFloat64(duplicates) >= 2 })
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
	waitFor(t, 30*time.Second, "resolved notification", func() bool { return countEvents(t, kube, ns, "AlertResolved") == 1 })
}
