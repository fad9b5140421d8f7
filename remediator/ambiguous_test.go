package remediator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

// lostReply passes a request to the API server and then, for the first
// `times` requests that match, throws the reply away and reports a reset
// connection: the write happened, the client cannot know.
type lostReply struct {
	next  http.RoundTripper
	match func(*http.Request) bool
	times atomic.Int64
}

func (l *lostReply) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err != nil || !l.match(req) || l.times.Add(-1) < 0 {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
}

// losingReplies loses the reply of the first request that matches.
func losingReplies(match func(*http.Request) bool) *lostReply {
	lr := &lostReply{match: match}
	lr.times.Store(1)
	return lr
}

func TestClaimWhoseReplyWasLostStillActs(t *testing.T) {
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	restarts := watchRestarts(t, admin, ns, "auth-service")
	lr := losingReplies(func(req *http.Request) bool {
		return req.Method != http.MethodGet && strings.Contains(req.URL.Path, "/leases")
	})
	cfg := rest.CopyConfig(k.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { lr.next = rt; return lr }
	kube := kubeClient(t, cfg)
	tr := startRemediator(t, restartPolicy(ns, ""), kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighMemoryUsage", "10st", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, time.Minute, "a decision", func() bool { return decisions(tr) == 1 })
	if lr.times.Load() >= 1 {
		t.Fatal("no reply was lost")
	}
	if got := testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")); got != 1 {
		t.Fatalf("restarts %v, want 1: the claim landed, so this replica holds it", got)
	}
	testenv.WaitFor(t, 30*time.Second, "the restart", func() bool { return restarts.Load() == 1 })
	// A second delivery is still a duplicate.
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, time.Minute, "the repeat", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDuplicate)) == 1
	})
}

func TestScaleDeltaIsAppliedOnceWhenTheReplyIsLost(t *testing.T) {
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil) // 2 replicas
	lr := losingReplies(func(req *http.Request) bool {
		return req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, "/scale")
	})
	cfg := rest.CopyConfig(k.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { lr.next = rt; return lr }
	kube := kubeClient(t, cfg)
	policy := fmt.Sprintf(`
defaults: {cooldown: 1m, timeout: 30s, retry_for: 1m}
rules:
  - name: scale-on-load
    matchers: ['alertname="HighLatency"']
    action: scale
    target: {namespace: '%[1]s', deployment: auth-service}
    allow: {namespaces: ['%[1]s'], deployments: [auth-service]}
    scale: {delta: 1, min_replicas: 1, max_replicas: 6}
`, ns)
	tr := startRemediator(t, policy, kube, actions.NewExecutor(kube, discardLogger()), nil)
	a := firing("HighLatency", "s1ow", time.Now().Truncate(time.Second), nil)
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatal(code)
	}
	testenv.WaitFor(t, time.Minute, "a decision", func() bool { return decisions(tr) == 1 })
	if lr.times.Load() >= 1 {
		t.Fatal("no reply was lost")
	}
	d, err := admin.AppsV1().Deployments(ns).Get(context.Background(), "auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 {
		t.Fatalf("replicas %d after delta 1 from 2, want 3", *d.Spec.Replicas)
	}
}
