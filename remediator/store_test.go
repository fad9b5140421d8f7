package remediator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestDecodeStateRejectsEditedAnnotations(t *testing.T) {
	for _, m := range []map[string]string{
		{annoFailures: "many"},
		{annoLastActionTime: "yesterday"},
		{annoOccurrences: "[{"},
	} {
		if _, err := decodeState(m); err == nil || !permanentStoreError(err) {
			t.Errorf("decodeState(%v) = %v, want a permanent error", m, err)
		}
	}
}

func TestLeaseName(t *testing.T) {
	short := leaseName(target{Kind: "deployment", Name: "auth-service"})
	if short != "warden-deployment-auth-service" {
		t.Fatalf("leaseName = %q", short)
	}
	long := strings.Repeat("a", 200)
	n1 := leaseName(target{Kind: "deployment", Name: long})
	n2 := leaseName(target{Kind: "deployment", Name: long + "b"})
	if len(n1) > 63 || n1 == n2 {
		t.Fatalf("long names: %q (%d), %q", n1, len(n1), n2)
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
			if p.ln != ln {
				// Taken down while this connection was being set up.
				p.mu.Unlock()
				c.Close()
				b.Close()
				continue
			}
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
	p.ln = nil
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// behindProxy is a remediator whose API server connection goes through a
// proxy the test takes down and brings back, acting on auth-service in ns.
type behindProxy struct {
	tr       *testRemediator
	proxy    *tcpProxy
	ns       string
	restarts *atomic.Int64
}

func startBehindProxy(t *testing.T) behindProxy {
	t.Helper()
	k := kubeServer.Get(t)
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
	// retry_for outlasts the outage however slowly this machine gets
	// through it.
	tr := startRemediator(t, strings.Replace(restartPolicy(ns, ""), "retry_for: 1m", "retry_for: 10m", 1), kube, actions.NewExecutor(kube, discardLogger()), nil)
	return behindProxy{tr: tr, proxy: p, ns: ns, restarts: restarts}
}

func TestAlertIsNotLostWhileAPIServerIsUnreachable(t *testing.T) {
	bp := startBehindProxy(t)
	tr, p, ns, restarts := bp.tr, bp.proxy, bp.ns, bp.restarts

	p.down()
	a := firing("HighMemoryUsage", "0utage", time.Now().Truncate(time.Second), map[string]string{"namespace": ns, "deployment": "auth-service"})
	code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil)
	if code != 202 {
		t.Fatalf("webhook while the API server is unreachable: %d %s, want 202 (queued)", code, body)
	}
	testenv.WaitFor(t, time.Minute, "a failed attempt to reach the API server", func() bool {
		return strings.Contains(logsOf(t).String(), "coordination store unavailable, retrying")
	})
	// Stay down through several retries; the webhook keeps answering.
	testenv.WaitFor(t, time.Minute, "several retries", func() bool {
		return logsOf(t).count("coordination store unavailable, retrying") >= 3
	})
	if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(a), nil); code != 202 {
		t.Fatalf("repeat while unreachable: %d, want 202", code)
	}
	if n := restarts.Load(); n != 0 {
		t.Fatal("restarted while the API server was unreachable")
	}
	p.up(t)
	testenv.WaitFor(t, 2*time.Minute, "the queued alert to be acted on once the API server is back", func() bool {
		return testutil.ToFloat64(tr.metrics.actions.WithLabelValues("restart", "success")) == 1
	})
	// The repeat delivered during the outage is the same occurrence.
	testenv.WaitFor(t, time.Minute, "the repeat to be recognised", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDuplicate)) == 1
	})
	if n := restarts.Load(); n != 1 {
		t.Fatalf("restartedAt changed %d times, want 1", n)
	}
}

func TestFlushCacheCoordinatesThroughRedis(t *testing.T) {
	rs := redisServer.Get(t)
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
	testenv.WaitFor(t, 30*time.Second, "100 decisions", func() bool { return decisions(replicas...) == 100 })
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
	testenv.WaitFor(t, 30*time.Second, "disabled skip", func() bool {
		return testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonDisabled)) == 1
	})
	if n := sessions.DBSize(ctx).Val(); n != 7 {
		t.Fatalf("disabled target flushed: %d keys left", n)
	}
}

// TestLeaseStates: states decodes the target records among the
// remediator's Leases in a namespace, ordered by Lease name; a record it
// cannot read comes with its error, and Leases that name no target (the
// approval records) are left out.
func TestLeaseStates(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	managed := map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"}
	lease := func(name string, anno map[string]string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: managed, Annotations: anno}}
	}
	good := target{Kind: "deployment", Namespace: "shop", Name: "auth-service"}
	st := targetState{LastActionAt: now, LastOutcome: outcomeActed, BreakerOpenUntil: now.Add(time.Hour)}
	corrupt := target{Kind: "deployment", Namespace: "shop", Name: "billing"}
	approval := lease("warden-approval-source-x", map[string]string{})
	encodeApproval(approval, Approval{ID: "a1", State: StatePending})
	kube := fake.NewClientset(
		lease(leaseName(good), st.encode(good)),
		lease(leaseName(corrupt), map[string]string{annoTarget: corrupt.String(), annoFailures: "many"}),
		approval,
	)
	got, err := (&leaseStore{kube: kube}).states(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		lease   string
		target  target
		corrupt bool
	}{ // by Lease name: warden-deployment-auth-service before warden-deployment-billing
		{leaseName(good), good, false},
		{leaseName(corrupt), corrupt, true},
	}
	if len(got) != len(want) {
		t.Fatalf("%d states, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.lease.Name != w.lease || g.target != w.target || (g.err != nil) != w.corrupt || (w.corrupt && !errors.Is(g.err, errCorruptState)) {
			t.Errorf("state %d: lease %s target %v err %v; want lease %s target %v corrupt %v", i, g.lease.Name, g.target, g.err, w.lease, w.target, w.corrupt)
		}
		if !w.corrupt && (!g.state.LastActionAt.Equal(st.LastActionAt) || !g.state.BreakerOpenUntil.Equal(st.BreakerOpenUntil) || g.state.LastOutcome != outcomeActed) {
			t.Errorf("state of %s: %+v, want %+v", w.lease, g.state, st)
		}
	}
}
