package actions

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestParseSource(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{"203.0.113.7", "203.0.113.7/32", ""},
		{" 203.0.113.0/24 ", "203.0.113.0/24", ""},
		{"203.0.113.7/24", "203.0.113.0/24", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"::ffff:203.0.113.7", "203.0.113.7/32", ""},
		{"fe80::1%eth0", "", "zoned"},
		{"203.0.113.300", "", "source"},
		{"evil.example", "", "source"},
		{"10.0.0.0/33", "", "source"},
		{"", "", "source"},
	} {
		got, err := ParseSource(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSource(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("ParseSource(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

func TestProtectedBy(t *testing.T) {
	office := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28")}
	for _, c := range []struct {
		src       string
		protected bool
	}{
		{"203.0.113.7", false},
		{"127.0.0.1", true},
		{"10.1.2.3", true},
		{"192.168.1.1", true},
		{"172.20.0.1", true},
		{"169.254.169.254", true},
		{"::1", true},
		{"fd00::1", true},
		{"fe80::1", true},
		{"198.51.100.5", true},
		{"198.51.100.16", false},
		// A CIDR containing a protected range is refused too.
		{"0.0.0.0/0", true},
		{"198.51.100.0/24", true},
	} {
		p, err := ParseSource(c.src)
		if err != nil {
			t.Fatal(err)
		}
		if _, got := ProtectedBy(p, office); got != c.protected {
			t.Errorf("ProtectedBy(%s) = %v, want %v", c.src, got, c.protected)
		}
	}
}

func TestBlocklistRoundTripAndStrictParse(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	in := []BlockEntry{
		{netip.MustParsePrefix("203.0.113.7/32"), at},
		{netip.MustParsePrefix("2001:db8::/32"), at.Add(time.Hour)},
	}
	text := FormatBlocklist(in)
	if !strings.Contains(text, "deny 203.0.113.7/32; # expires=2026-11-30T09:00:00Z\n") {
		t.Errorf("blocklist text:\n%s", text)
	}
	out, err := ParseBlocklist(text)
	if err != nil || len(out) != 2 || out[0] != in[0] || out[1] != in[1] {
		t.Errorf("round trip: %v, %v", out, err)
	}
	for _, bad := range []string{
		"allow 1.2.3.4; # expires=2026-11-30T09:00:00Z",
		"deny 1.2.3.4;",
		"deny 1.2.3.4; # expires=tomorrow",
		"deny example.org; # expires=2026-11-30T09:00:00Z",
		"deny 1.2.3.4 # expires=2026-11-30T09:00:00Z",
	} {
		if _, err := ParseBlocklist("# header\n" + bad + "\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("ParseBlocklist(%q) = %v, want an error naming line 2", bad, err)
		}
	}
}

func TestBlockSourceRequestValidation(t *testing.T) {
	ok := Request{Kind: BlockSource, Namespace: "ns", Deployment: "nginx", Blocklist: "bl", BlocklistKey: "k",
		Source: netip.MustParsePrefix("203.0.113.7/32"), BlockFor: time.Hour, MaxEntries: 1, ReloadPort: 1}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(r *Request){
		"no source":      func(r *Request) { r.Source = netip.Prefix{} },
		"no configmap":   func(r *Request) { r.Blocklist = "" },
		"no key":         func(r *Request) { r.BlocklistKey = "" },
		"zero duration":  func(r *Request) { r.BlockFor = 0 },
		"over 24h":       func(r *Request) { r.BlockFor = 25 * time.Hour },
		"no max entries": func(r *Request) { r.MaxEntries = 0 },
	} {
		r := ok
		mutate(&r)
		if err := r.validate(); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: %v, want ErrInvalidRequest", name, err)
		}
	}
}

// blockFixture is a namespace with a gateway Deployment whose one pod
// answers reloads, and an empty blocklist ConfigMap.
type blockFixture struct {
	ns     string
	port   int
	reload *reloadServer
	req    Request
}

func newBlockFixture(t *testing.T, admin kubernetes.Interface) blockFixture {
	t.Helper()
	ns := createNamespace(t, admin)
	port, servers := startReloadServers(t, []string{"127.0.0.1"}, []int{200})
	createWorkload(t, admin, ns, "nginx", 1, withPodIPs("127.0.0.1"))
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(context.Background(), BlocklistConfigMap(ns, "auth-gateway-blocklist", "blocklist.conf"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return blockFixture{ns: ns, port: port, reload: servers[0], req: Request{
		Kind: BlockSource, Namespace: ns, Deployment: "nginx",
		Blocklist: "auth-gateway-blocklist", BlocklistKey: "blocklist.conf",
		BlockFor: time.Hour, MaxEntries: 2, ReloadPort: port, ReloadPath: "/-/reload",
		Timeout: 20 * time.Second,
	}}
}

func (f blockFixture) entries(t *testing.T, admin kubernetes.Interface) []BlockEntry {
	t.Helper()
	cm, err := admin.CoreV1().ConfigMaps(f.ns).Get(context.Background(), f.req.Blocklist, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseBlocklist(cm.Data[f.req.BlocklistKey])
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestBlockSourceWritesEntryReloadsAndExpires(t *testing.T) {
	k := kubeServer.Get(t)
	f := newBlockFixture(t, k.Client)
	now := time.Now().Truncate(time.Second)
	clock := now
	ex := NewExecutor(k.Client, testLogger(t), WithBackoff(10*time.Millisecond, 50*time.Millisecond), WithClock(func() time.Time { return clock }))
	ctx := context.Background()

	req := f.req
	req.Source = netip.MustParsePrefix("203.0.113.7/32")
	res, err := ex.Run(ctx, req)
	if err != nil || !res.Changed || !res.Verified {
		t.Fatalf("block: %+v, %v", res, err)
	}
	if got := f.entries(t, k.Client); len(got) != 1 || got[0].Prefix != req.Source || !got[0].Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("blocklist after block: %v", got)
	}
	if n := f.reload.calls.Load(); n != 1 {
		t.Errorf("gateway reloaded %d times, want 1", n)
	}

	// Blocking it again extends the entry instead of adding one.
	clock = now.Add(10 * time.Minute)
	if _, err := ex.Run(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := f.entries(t, k.Client); len(got) != 1 || !got[0].Expires.Equal(now.Add(70*time.Minute)) {
		t.Errorf("blocklist after second block: %v", got)
	}

	// Nothing expired yet: the sweep writes nothing and does not reload.
	sweep := f.req
	sweep.Kind = ExpireBlocks
	calls := f.reload.calls.Load()
	if res, err := ex.Run(ctx, sweep); err != nil || res.Changed {
		t.Errorf("early sweep: %+v, %v", res, err)
	}
	if f.reload.calls.Load() != calls {
		t.Error("a sweep that removed nothing reloaded the gateway")
	}
	clock = now.Add(71 * time.Minute)
	res, err = ex.Run(ctx, sweep)
	if err != nil || !res.Changed || !strings.Contains(res.Detail, "unblocked 203.0.113.7/32") {
		t.Fatalf("sweep: %+v, %v", res, err)
	}
	if got := f.entries(t, k.Client); len(got) != 0 {
		t.Errorf("blocklist after sweep: %v", got)
	}
	if f.reload.calls.Load() != calls+1 {
		t.Error("the sweep did not reload the gateway")
	}
}

func TestBlockSourceRefusals(t *testing.T) {
	k := kubeServer.Get(t)
	f := newBlockFixture(t, k.Client)
	ex := NewExecutor(k.Client, testLogger(t), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	ctx := context.Background()
	block := func(src string) error {
		req := f.req
		req.Source = netip.MustParsePrefix(src)
		req.Protected = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28")}
		_, err := ex.Run(ctx, req)
		return err
	}
	for _, src := range []string{"10.0.0.7/32", "127.0.0.1/32", "198.51.100.3/32", "0.0.0.0/0"} {
		if err := block(src); !errors.Is(err, ErrProtectedSource) || IsTransient(err) {
			t.Errorf("block %s: %v, want a permanent ErrProtectedSource", src, err)
		}
	}
	if got := f.entries(t, k.Client); len(got) != 0 {
		t.Errorf("protected sources were written: %v", got)
	}
	if err := block("203.0.113.7/32"); err != nil {
		t.Fatal(err)
	}
	if err := block("203.0.113.8/32"); err != nil {
		t.Fatal(err)
	}
	// max_entries is 2: the third source is refused, an existing one is not.
	if err := block("203.0.113.9/32"); !errors.Is(err, ErrBlastRadius) || Reason(err) != ReasonBlastRadius {
		t.Errorf("third source: %v, want ErrBlastRadius", err)
	}
	if err := block("203.0.113.7/32"); err != nil {
		t.Errorf("re-blocking an existing entry at the cap: %v", err)
	}
	if got := f.entries(t, k.Client); len(got) != 2 {
		t.Errorf("blocklist: %v, want the two first sources", got)
	}
	// A missing ConfigMap is a permanent not-found: it is not created.
	req := f.req
	req.Blocklist = "other-list"
	req.Source = netip.MustParsePrefix("203.0.113.7/32")
	if _, err := ex.Run(ctx, req); Reason(err) != ReasonNotFound || IsTransient(err) {
		t.Errorf("missing blocklist: %v (reason %s), want permanent not_found", err, Reason(err))
	}
}

// Replicas blocking different sources at once lose no entry: the writes
// are conditional and a conflict starts over on the new content.
func TestConcurrentBlocksLoseNoEntry(t *testing.T) {
	k := kubeServer.Get(t)
	f := newBlockFixture(t, k.Client)
	ctx := context.Background()
	const n = 6
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ex := NewExecutor(k.Client, testLogger(t), WithBackoff(5*time.Millisecond, 50*time.Millisecond))
			req := f.req
			req.MaxEntries = n
			req.Source = netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), 32)
			_, err := ex.Run(ctx, req)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := f.entries(t, k.Client); len(got) != n {
		t.Errorf("%d entries after %d concurrent blocks: %v", len(got), n, got)
	}
}
