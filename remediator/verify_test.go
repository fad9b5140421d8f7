package remediator

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// completeRollout reports d's rollout as finished, as the deployment
// controller (which the test API server lacks) would.
func completeRollout(t testing.TB, kube kubernetes.Interface, d *appsv1.Deployment) {
	t.Helper()
	ctx := context.Background()
	for {
		cur, err := kube.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := int32(1)
		if cur.Spec.Replicas != nil {
			n = *cur.Spec.Replicas
		}
		cur.Status = appsv1.DeploymentStatus{ObservedGeneration: cur.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		_, err = kube.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "modified") {
			t.Fatal(err)
		}
	}
}

// runRolloutController finishes every rollout of the Deployment until the
// test ends.
func runRolloutController(t testing.TB, kube kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = testenv.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || d.Status.ObservedGeneration >= d.Generation {
				return false, nil
			}
			n := *d.Spec.Replicas
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
			_, _ = kube.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			return false, nil
		})
	}()
}

// symptomExporter serves test_broken{namespace} gauges the test flips;
// Prometheus alerts on them with the rule in symptomRules.
type symptomExporter struct {
	mu     sync.Mutex
	broken map[string]float64
	server *httptest.Server
}

func (e *symptomExporter) set(ns string, v float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.broken[ns] = v
}

func (e *symptomExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := make([]string, 0, len(e.broken))
	for ns := range e.broken {
		names = append(names, ns)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# TYPE test_broken gauge\n")
	for _, ns := range names {
		fmt.Fprintf(&b, "test_broken{namespace=%q,deployment=\"auth-service\"} %g\n", ns, e.broken[ns])
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write([]byte(b.String()))
}

const symptomRules = `groups:
  - name: test
    rules:
      - alert: HighMemoryUsage
        expr: test_broken > 0
`

type symptomEnv struct {
	exporter *symptomExporter
	prom     *testenv.Prometheus
	dir      string
}

func (s *symptomEnv) Close() {
	s.prom.Stop()
	s.exporter.server.Close()
	os.RemoveAll(s.dir)
}

// startSymptoms starts an exporter and a Prometheus that evaluates
// symptomRules over it every second.
func startSymptoms() (*symptomEnv, error) {
	e := &symptomExporter{broken: map[string]float64{}}
	e.server = httptest.NewServer(e)
	dir, err := os.MkdirTemp("", "warden-symptoms")
	if err != nil {
		return nil, err
	}
	rules := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rules, []byte(symptomRules), 0o644); err != nil {
		return nil, err
	}
	p, err := testenv.NewPrometheus(context.Background(), testenv.PrometheusConfig{
		Jobs:      []testenv.ScrapeJob{{Name: "symptoms", Targets: []string{strings.TrimPrefix(e.server.URL, "http://")}}},
		RuleFiles: []string{rules},
	})
	if err != nil {
		e.server.Close()
		return nil, err
	}
	return &symptomEnv{exporter: e, prom: p, dir: dir}, nil
}

var symptomServer = testenv.NewLazy(startSymptoms, (*symptomEnv).Close)

// firingInPrometheus makes the test's alert fire in Prometheus and returns
// it as a webhook would carry it.
func firingInPrometheus(t testing.TB, s *symptomEnv, ns, fp string) (alert func(startsAt time.Time) []byte) {
	t.Helper()
	s.exporter.set(ns, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pa, err := s.prom.WaitForAlert(ctx, "HighMemoryUsage", "firing", map[string]string{"namespace": ns})
	if err != nil {
		t.Fatal(err)
	}
	// The ALERTS series can trail the alerts API by an evaluation.
	rd := &PrometheusReader{URL: s.prom.URL}
	if err := testenv.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		ok, err := alertFiring(ctx, rd, amtemplate.KV(pa.Labels))
		return ok && err == nil, nil
	}); err != nil {
		t.Fatalf("ALERTS series of %v: %v", pa.Labels, err)
	}
	return func(startsAt time.Time) []byte {
		return payload(firing("HighMemoryUsage", fp, startsAt, pa.Labels))
	}
}

// verifyPolicy is gatePolicy with a breaker that opens at the first
// failed or ineffective action, and the given verify block.
func verifyPolicy(ns, verify string) string {
	return strings.Replace(gatePolicy(ns, "verify: "+verify, ""), "failures: 3", "failures: 1", 1)
}

// startVerifying makes HighMemoryUsage fire in Prometheus for a fresh
// target and starts a remediator that verifies against that Prometheus.
// It returns the webhook body of the alert for a given startsAt.
func startVerifying(t *testing.T, verify string) (kubernetes.Interface, *symptomEnv, string, *testRemediator, func(time.Time) []byte) {
	t.Helper()
	kube := kubeClient(t, kubeServer.Get(t).Config)
	sym := symptomServer.Get(t)
	ns := setupTarget(t, kube, "auth-service", nil)
	runRolloutController(t, kube, ns, "auth-service")
	body := firingInPrometheus(t, sym, ns, "v1")
	tr := startRemediator(t, verifyPolicy(ns, verify), kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) {
		o.Prometheus = &PrometheusReader{URL: sym.prom.URL}
	})
	return kube, sym, ns, tr, body
}

func TestVerificationEffectiveWhenAlertStopsFiring(t *testing.T) {
	kube, sym, ns, tr, body := startVerifying(t, "{window: 5m, rollout_timeout: 5m, poll_interval: 100ms}")
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", body(time.Now()), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "restart", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
	// The fix worked: the symptom goes away.
	sym.exporter.set(ns, 0)
	testenv.WaitFor(t, 2*time.Minute, "effective outcome", func() bool {
		return testutil.ToFloat64(tr.verifyMetrics.outcomes.WithLabelValues("restart-on-memory", "restart", OutcomeEffective)) == 1
	})
	if n := testutil.CollectAndCount(tr.verifyMetrics.timeToRecovery); n != 1 {
		t.Fatalf("%d time-to-recovery series, want 1", n)
	}
	if !strings.Contains(logsOf(t).String(), "outcome=effective") {
		t.Fatal("no audit line for the effective outcome")
	}
	testenv.WaitFor(t, 30*time.Second, "RemediationEffective event", func() bool {
		return countEvents(t, kube, ns, "RemediationEffective") == 1
	})
	// The action on record shows its outcome with the time to recovery.
	recovered := regexp.MustCompile(`<td class="effective">effective after [1-9]\d*s</td>`)
	testenv.WaitFor(t, 30*time.Second, "the outcome on the status page", func() bool {
		var page bytes.Buffer
		if err := statusTemplate.Execute(&page, tr.status(context.Background())); err != nil {
			t.Fatal(err)
		}
		return recovered.Match(page.Bytes())
	})
}

func TestVerificationIneffectiveOpensBreaker(t *testing.T) {
	// The alert keeps firing whatever the window: the outcome does not
	// depend on how fast anything runs.
	kube, _, ns, tr, body := startVerifying(t, "{window: 2s, rollout_timeout: 1m, poll_interval: 100ms}")
	t0 := time.Now()
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", body(t0), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 2*time.Minute, "ineffective outcome", func() bool {
		return testutil.ToFloat64(tr.verifyMetrics.outcomes.WithLabelValues("restart-on-memory", "restart", OutcomeIneffective)) == 1
	})
	testenv.WaitFor(t, 30*time.Second, "breaker open", func() bool {
		return testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")) == 1
	})
	if got, _ := breakerGauge(t, tr.reg, ns, "deployment/auth-service"); got != 1 {
		t.Fatalf("breaker_open = %v, want 1", got)
	}
	testenv.WaitFor(t, 30*time.Second, "RemediationIneffective event", func() bool {
		return countEvents(t, kube, ns, "RemediationIneffective") == 1
	})
	// The next occurrence is refused by the open breaker.
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", body(t0.Add(time.Minute)), nil); code != 202 {
		t.Fatal(code)
	}
	waitSkips(t, tr, ReasonBreakerOpen, 1, "")
}

func TestVerificationInconclusiveWhenPrometheusIsDown(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	runRolloutController(t, kube, ns, "auth-service")
	prom := testenv.StartPrometheus(t, testenv.PrometheusConfig{})
	// Prometheus is gone before the action: nothing can tell whether the
	// alert cleared.
	prom.Stop()
	tr := startRemediator(t, verifyPolicy(ns, "{window: 1s, rollout_timeout: 1m, poll_interval: 100ms}"),
		kube, actions.NewExecutor(kube, discardLogger()), func(o *Options) {
			o.Prometheus = &PrometheusReader{URL: prom.URL}
		})
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(firing("HighMemoryUsage", "c1", time.Now(), labels)), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 2*time.Minute, "inconclusive outcome", func() bool {
		return testutil.ToFloat64(tr.verifyMetrics.outcomes.WithLabelValues("restart-on-memory", "restart", OutcomeInconclusive)) == 1
	})
	// Not knowing is not a failure: the breaker stays closed.
	if got := testutil.ToFloat64(tr.metrics.escalations.WithLabelValues(ns, "deployment/auth-service")); got != 0 {
		t.Fatalf("escalations = %v, want 0", got)
	}
}

func TestVerifiedCountsIneffectiveTowardsBreaker(t *testing.T) {
	b := BreakerConfig{Failures: 2, Refires: 3, Window: time.Hour, OpenFor: time.Hour}
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	st := targetState{WindowStart: now, Occurrences: []occurrence{{Key: "k1", At: now}, {Key: "k2", At: now.Add(time.Minute)}}}
	if verified(&st, "k1", OutcomeEffective, now, b) || st.Occurrences[0].Outcome != OutcomeEffective {
		t.Fatalf("effective opened the breaker: %+v", st)
	}
	if verified(&st, "k1", OutcomeInconclusive, now, b) {
		t.Fatalf("inconclusive counted as failure: %+v", st)
	}
	if verified(&st, "k1", OutcomeIneffective, now, b) {
		t.Fatalf("first ineffective opened the breaker: %+v", st)
	}
	// The second action ran without error, which resets the failure
	// counter; its ineffective outcome still adds up with the first.
	finish(&st, "k2", outcomeActed, now.Add(time.Minute), b)
	if !verified(&st, "k2", OutcomeIneffective, now.Add(2*time.Minute), b) || !st.BreakerOpenUntil.Equal(now.Add(2*time.Minute+time.Hour)) {
		t.Fatalf("second ineffective did not open the breaker: %+v", st)
	}
}

func TestResolvedNotificationIsEvidenceOfRecovery(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "auth-service", nil)
	runRolloutController(t, kube, ns, "auth-service")
	// No Prometheus, no Alertmanager API: only the webhook can tell.
	tr := startRemediator(t, verifyPolicy(ns, "{window: 5m, rollout_timeout: 5m, poll_interval: 100ms}"),
		kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighMemoryUsage", "rs1", time.Now(), map[string]string{"namespace": ns, "deployment": "auth-service"})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 30*time.Second, "restart", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
	a.Status, a.EndsAt = "resolved", time.Now()
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, 2*time.Minute, "effective outcome", func() bool {
		return testutil.ToFloat64(tr.verifyMetrics.outcomes.WithLabelValues("restart-on-memory", "restart", OutcomeEffective)) == 1
	})
}

// scriptedReader answers Firing with the next entry of its script (true:
// the alert fires), repeating the last one.
type scriptedReader struct {
	mu     sync.Mutex
	script []bool
}

func (s *scriptedReader) String() string { return "scripted" }

func (s *scriptedReader) Firing(_ context.Context, _ labels.Matchers) ([]map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	firing := s.script[0]
	if len(s.script) > 1 {
		s.script = s.script[1:]
	}
	if !firing {
		return nil, nil
	}
	return []map[string]string{{"alertname": "RedisEvictions"}}, nil
}

func TestVerifyOutcomeFollowsTheAlertSource(t *testing.T) {
	tests := []struct {
		name   string
		script []bool
		window time.Duration
		want   string
	}{
		{"stops firing after a while", []bool{true, true, false}, time.Hour, OutcomeEffective},
		{"a single missing read is not recovery", []bool{true, false, true}, 300 * time.Millisecond, OutcomeIneffective},
		{"never reported firing", []bool{false}, 300 * time.Millisecond, OutcomeInconclusive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Remediator{now: time.Now, prometheus: &scriptedReader{script: tt.script}}
			p := &Policy{Verify: VerifyConfig{Window: tt.window, RolloutTimeout: time.Hour, PollInterval: 10 * time.Millisecond}}
			v := verification{snap: &snapshot{policy: p}, alert: amtemplate.KV{"alertname": "RedisEvictions", "target": "cache"},
				target: target{Kind: "redis", Name: "cache"}, kind: actions.FlushCache, start: time.Now()}
			got, detail, _ := r.verify(context.Background(), v)
			if got != tt.want {
				t.Fatalf("outcome %s (%s), want %s", got, detail, tt.want)
			}
		})
	}
}
