package remediator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/warden-sre/warden/internal/browser"
	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func TestDecisionRingKeepsTheNewestDecisionsNewestFirst(t *testing.T) {
	var ring decisionRing
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	total := recentDecisions + 37
	for i := range total {
		ring.add(t0.Add(time.Duration(i)*time.Second), record{Alertname: fmt.Sprint(i)})
	}
	got := ring.newestFirst()
	if len(got) != recentDecisions {
		t.Fatalf("%d decisions kept, want %d", len(got), recentDecisions)
	}
	for i, e := range got {
		if want := fmt.Sprint(total - 1 - i); e.Alertname != want {
			t.Fatalf("entry %d is decision %s, want %s", i, e.Alertname, want)
		}
	}
}

const (
	statusUser     = "sre"
	statusPassword = "page-me"
)

// startStatusPage serves tr's status page on its own loopback server.
func startStatusPage(t testing.TB, tr *testRemediator) string {
	t.Helper()
	srv := httptest.NewServer(tr.StatusHandler())
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func withStatusAuth(o *Options) {
	o.Auth = Auth{BearerToken: testToken, Username: statusUser, Password: statusPassword}
}

func getPage(t testing.TB, url string, setAuth func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if setAuth != nil {
		setAuth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStatusPageAsksForTheWebhookCredentials(t *testing.T) {
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), &recordingExecutor{}, withStatusAuth)
	url := startStatusPage(t, tr)
	for _, tc := range []struct {
		name string
		auth func(*http.Request)
		want int
	}{
		{"none", nil, http.StatusUnauthorized},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth(statusUser, "guess") }, http.StatusUnauthorized},
		{"basic auth", func(r *http.Request) { r.SetBasicAuth(statusUser, statusPassword) }, http.StatusOK},
		{"bearer token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) }, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := getPage(t, url, tc.auth); code != tc.want {
				t.Fatalf("GET / = %d, want %d:\n%s", code, tc.want, body)
			}
		})
	}
	if code, _ := getPage(t, url+"nothing-here", func(r *http.Request) { r.SetBasicAuth(statusUser, statusPassword) }); code != http.StatusNotFound {
		t.Fatalf("GET /nothing-here = %d, want 404", code)
	}
}

func TestStatusPageEscapesAlertLabels(t *testing.T) {
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), &recordingExecutor{}, withStatusAuth)
	url := startStatusPage(t, tr)
	const name = `<script>window.__pwned=1</script>`
	if code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(firing(name, "e5c4", time.Now(), nil)), nil); code != 202 {
		t.Fatalf("webhook = %d: %s", code, body)
	}
	testenv.WaitFor(t, time.Minute, "the decision", func() bool { return len(tr.recent.newestFirst()) == 1 })
	_, body := getPage(t, url, func(r *http.Request) { r.SetBasicAuth(statusUser, statusPassword) })
	if strings.Contains(body, name) {
		t.Fatalf("the page holds the label unescaped:\n%s", body)
	}
	if !strings.Contains(body, "&lt;script&gt;window.__pwned=1&lt;/script&gt;") {
		t.Fatalf("the page does not show the escaped label:\n%s", body)
	}
}

// TestStatusPageInBrowserShowsEveryReplicasActions runs two replicas on a
// real API server. One restarts a Deployment; the other's page, loaded in
// Chromium, shows that restart (from the Lease), its own decisions, the
// cooldown, the policy, and a label holding a script as text.
func TestStatusPageInBrowserShowsEveryReplicasActions(t *testing.T) {
	tab := browser.Start(t)
	k := kubeServer.Get(t)
	admin := kubeClient(t, k.Config)
	ns := setupTarget(t, admin, "auth-service", nil)
	policy := strings.Replace(restartPolicy(ns, ""), "cooldown: 3s", "cooldown: 1h", 1)
	var replicas []*testRemediator
	for _, id := range []string{"replica-a", "replica-b"} {
		kube := kubeClient(t, k.Config)
		exec := actions.NewExecutor(kube, discardLogger(), actions.WithIdentity(id))
		replicas = append(replicas, startRemediator(t, policy, kube, exec, func(o *Options) {
			withStatusAuth(o)
			o.Identity = id
		}))
	}
	a, b := replicas[0], replicas[1]
	labels := map[string]string{"namespace": ns, "deployment": "auth-service"}
	if code, body, _ := post(t, a.server.URL+"/api/v1/alerts", payload(firing("HighMemoryUsage", "a1b2c3d4", time.Now().Add(-time.Minute), labels)), nil); code != 202 {
		t.Fatalf("webhook a = %d: %s", code, body)
	}
	const scriptLabel = `<script>window.__pwned=1</script>`
	if code, body, _ := post(t, b.server.URL+"/api/v1/alerts", payload(firing(scriptLabel, "b00b", time.Now(), nil)), nil); code != 202 {
		t.Fatalf("webhook b = %d: %s", code, body)
	}
	testenv.WaitFor(t, 2*time.Minute, "both decisions", func() bool {
		return len(a.recent.newestFirst()) == 1 && len(b.recent.newestFirst()) == 1
	})
	if got := a.recent.newestFirst()[0]; got.Outcome != outcomeActed {
		t.Fatalf("replica a: %+v, want acted", got.record)
	}

	// A page that never shows what is waited for fails the test instead
	// of hanging it.
	ctx, cancel := context.WithTimeout(tab, 5*time.Minute)
	defer cancel()
	browser.SetAuthorization(ctx, t, browser.BasicAuth(statusUser, statusPassword))
	if err := chromedp.Do(ctx, chromedp.Navigate(startStatusPage(t, b)), chromedp.WaitVisible("#rules")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	browser.Screenshot(ctx, t, "remediator-status")
	for _, c := range []struct{ sel, want string }{
		{"#identity", "replica-b"},
		{"#occurrences", "deployment/auth-service"},
		{"#occurrences", "a1b2c3d4"},
		{"#occurrences", outcomeActed},
		{"#targets", "replica-a"}, // the Lease's last writer
		{"#cooldowns", "deployment/auth-service"},
		{"#recent", scriptLabel},
		{"#recent", ReasonNoMatchingRule},
		{"#rules", "restart-on-memory"},
		{"#dry-run", "Dry-run is off"},
	} {
		if got := browser.Text(ctx, t, c.sel); !strings.Contains(got, c.want) {
			t.Errorf("%s shows %q, want it to contain %q", c.sel, got, c.want)
		}
	}
	pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.__pwned !== "undefined"`))
	if err != nil {
		t.Fatal(err)
	}
	if pwned {
		t.Error("the script in the alert label ran")
	}
	scripts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.scripts.length`))
	if err != nil {
		t.Fatal(err)
	}
	if scripts != 0 {
		t.Errorf("the page has %d script elements, want none", scripts)
	}
}

// The page shows the policy's freezes (and whether one is in force), each
// rule's block_when, and verification results beside the decisions.
func TestStatusPageShowsFreezesBlockWhenAndVerification(t *testing.T) {
	policy := `
freezes:
  - reason: "quarter-end close"
    from: 2000-01-01T00:00:00Z
    to: 2999-01-01T00:00:00Z
  - reason: "old migration"
    from: 2000-01-01T00:00:00Z
    to: 2001-01-01T00:00:00Z
  - reason: "weekly release train"
    days: [sat]
    start: "01:00"
    end: "02:00"
    time_zone: Europe/Berlin
rules:
  - name: restart-auth
    matchers: ['alertname="HighMemoryUsage"']
    action: restart
    target: {namespace: rust-security, deployment: auth-service}
    allow: {namespaces: [rust-security], deployments: [auth-service]}
    block_when:
      - ['alertname="DatabaseDown"']
`
	tr := startRemediator(t, policy, fake.NewClientset(), &recordingExecutor{}, withStatusAuth)
	url := startStatusPage(t, tr)
	tr.recent.add(time.Now(), record{Alertname: "HighMemoryUsage", Rule: "restart-auth", Outcome: OutcomeIneffective, Reason: "verification", Detail: "alert still firing after the verification window"})
	_, body := getPage(t, url, func(r *http.Request) { r.SetBasicAuth(statusUser, statusPassword) })
	for _, want := range []string{
		"quarter-end close", "2000-01-01T00:00:00Z to 2999-01-01T00:00:00Z", "<strong>frozen</strong>",
		"old migration", "not active",
		"weekly release train", "sat 01:00-02:00 Europe/Berlin",
		`{alertname=&#34;DatabaseDown&#34;}`,
		`<td class="ineffective">ineffective</td><td>verification</td><td>alert still firing after the verification window</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", body)
	}
}

// TestStatusPageKeepsItsRedisClientsOpenThroughAReload: a reload that
// replaces the Redis client while the status page is being collected
// waits until the page is done with the old client, so the page reads the
// target's record instead of "client is closed"; the old client is closed
// afterwards.
func TestStatusPageKeepsItsRedisClientsOpenThroughAReload(t *testing.T) {
	rs := redisServer.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy := fmt.Sprintf(`
redis:
  - {name: cache, address: '%s', db: 2, coordination_db: 5, enabled: true}
rules:
  - name: flush
    matchers: ['alertname="CacheCorrupt"']
    action: flush-cache
    target: {redis: cache}
    allow: {redis_targets: [cache]}
  - name: restart
    matchers: ['alertname="HighMemoryUsage"']
    action: restart
    target: {namespace: shop, deployment: auth-service}
    allow: {namespaces: [shop], deployments: [auth-service]}
`, rs.Addr)
	// The page lists the Leases of shop before it reads Redis: the list
	// holds the page there until the test lets it go.
	kube := fake.NewClientset()
	listing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	kube.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(listing); <-release })
		return false, nil, nil
	})
	// Not run: no worker, breaker refresh or approval round holds the
	// snapshot besides the page.
	r, err := New(Options{Kube: kube, Executor: &recordingExecutor{}, Registerer: prometheus.NewRegistry(), Logger: newTestLogger(t)}, mustPolicy(t, policy))
	if err != nil {
		t.Fatal(err)
	}
	cacheTarget := target{Kind: "redis", Name: "cache"}
	old := r.current.Load()
	if err := old.redis["cache"].update(ctx, cacheTarget, func(st *targetState) bool {
		st.LastActionAt, st.LastOutcome = time.Now(), outcomeActed
		return true
	}); err != nil {
		t.Fatal(err)
	}

	pages := make(chan statusPage, 1)
	go func() { pages <- r.status(ctx) }()
	select {
	case <-listing:
	case <-ctx.Done():
		t.Fatal("the status page never listed the Leases")
	}
	r.SetPolicy(mustPolicy(t, policy))
	// Either the old snapshot is held (the reload waits for the page) or
	// its clients get closed under the page.
	oldClosed := func() bool { return errors.Is(old.redis["cache"].client.Ping(ctx).Err(), redis.ErrClosed) }
	if err := testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		return old.users.held() > 0 || oldClosed(), nil
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	page := <-pages
	if len(page.StoreErrors) > 0 {
		t.Errorf("store errors on the page: %v", page.StoreErrors)
	}
	if len(page.Targets) != 1 || page.Targets[0].Target != cacheTarget.String() || page.Targets[0].LastOutcome != outcomeActed {
		t.Errorf("targets on the page: %+v, want redis/cache acted", page.Targets)
	}
	if err := testenv.Poll(ctx, 10*time.Millisecond, func() (bool, error) { return oldClosed(), nil }); err != nil {
		t.Fatal("the replaced Redis client was never closed:", err)
	}
}
