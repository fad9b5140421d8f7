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

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator/actions"
)

func blockPolicy(ns, approvals string) string {
	return fmt.Sprintf(`
defaults: {cooldown: 1m, timeout: 20s, retry_for: 30s}
rate_limit: {actions_per_hour: 0}
approvals: {%s}
rules:
  - name: block-attacking-source
    matchers: ['alertname=~"BruteForceSource|PasswordSprayingSource"']
    action: block-source
    target: {namespace: %s, deployment: nginx}
    allow: {namespaces: [%s], deployments: [nginx]}
    block_source:
      configmap: auth-gateway-blocklist
      max_entries: 5
      protected: [198.51.100.0/28]
      reload: {port: 8081}
`, approvals, ns, ns)
}

// approvalEnv is a namespace with the gateway Deployment and its
// blocklist, and replicas of the remediator sharing a clock. Their
// approval rounds run only when a test calls poll, so that every step
// is explicit.
type approvalEnv struct {
	t *testing.T
	// ctx ends before the replicas stop, ending the verifications the
	// approved actions started.
	ctx      context.Context
	kube     kubernetes.Interface
	ns       string
	exec     *recordingExecutor
	replicas []*testRemediator
	clock    *testClock
}

func newApprovalEnv(t *testing.T, replicas int, approvals string, exec actions.Executor) *approvalEnv {
	t.Helper()
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ns := setupTarget(t, kube, "nginx", nil)
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(context.Background(), actions.BlocklistConfigMap(ns, "auth-gateway-blocklist", "blocklist.conf"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &approvalEnv{t: t, kube: kube, ns: ns, clock: newTestClock()}
	if exec == nil {
		e.exec = &recordingExecutor{}
		exec = e.exec
	}
	for range replicas {
		e.replicas = append(e.replicas, startRemediator(t, blockPolicy(ns, approvals), kube, exec, func(o *Options) { o.Now = e.clock.Now }))
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // runs before the replicas' cleanups
	e.ctx = ctx
	return e
}

// alert delivers the alert to every replica, twice, as Alertmanager's HA
// peers and retries do.
func (e *approvalEnv) alert(t *testing.T, fp, source string) {
	t.Helper()
	a := firing("BruteForceSource", fp, e.clock.Now().Add(-3*time.Minute), map[string]string{"source": source})
	for range 2 {
		for _, r := range e.replicas {
			if code, body, _ := post(t, r.server.URL+"/api/v1/alerts", payload(a), nil); code != http.StatusAccepted {
				t.Fatalf("webhook: %d %s", code, body)
			}
		}
	}
}

// poll runs one approval round on every replica at once, once their
// Lease caches, which the rounds read, hold the approval records as the
// API server has them now.
func (e *approvalEnv) poll() {
	e.waitCaches()
	var wg sync.WaitGroup
	for _, r := range e.replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pollApprovals(e.ctx)
		}()
	}
	wg.Wait()
}

// waitCaches waits until every replica's Lease cache holds each approval
// record at least at the version the API server has now.
func (e *approvalEnv) waitCaches() {
	t := e.t
	t.Helper()
	list, err := e.kube.CoordinationV1().Leases(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labelApprovalID})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range e.replicas {
		testenv.WaitFor(t, time.Minute, "the Lease cache to hold the approval records", func() bool {
			for i := range list.Items {
				if l, ok := r.leases.cache.get(e.ns, list.Items[i].Name); !ok || !newer(l, &list.Items[i]) {
					return false
				}
			}
			return true
		})
	}
}

func (e *approvalEnv) approvals(t *testing.T, all bool) []Approval {
	t.Helper()
	l, err := ListApprovals(context.Background(), e.kube, []string{e.ns}, all)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitPending waits until n proposals are pending and every replica has
// handled its deliveries, and returns the proposals.
func (e *approvalEnv) waitPending(t *testing.T, n int) []Approval {
	t.Helper()
	testenv.WaitFor(t, time.Minute, fmt.Sprintf("%d pending approvals", n), func() bool {
		// Every delivery but the n proposals is counted as a skip.
		return len(e.approvals(t, false)) == n && decisions(e.replicas...) >= float64(2*len(e.replicas)*n-n)
	})
	return e.approvals(t, false)
}

func (e *approvalEnv) total(decision string) float64 {
	var n float64
	for _, r := range e.replicas {
		n += testutil.ToFloat64(r.approvals.total.WithLabelValues("block-attacking-source", decision))
	}
	return n
}

func (e *approvalEnv) blocks() int {
	n := 0
	for _, req := range e.exec.requests() {
		if req.Kind == actions.BlockSource {
			n++
		}
	}
	return n
}

func TestApprovalPendingThenApprovedActsOnce(t *testing.T) {
	e := newApprovalEnv(t, 2, "expire_after: 10m, poll_interval: 10m", nil)
	e.alert(t, "fp1", "203.0.113.7")
	pending := e.waitPending(t, 1)
	a := pending[0]
	if a.State != StatePending || a.Alert.Name != "BruteForceSource" || a.Target != "source/203.0.113.7-32" || a.Action != actions.BlockSource {
		t.Fatalf("proposal: %+v", a)
	}
	e.poll()
	if n := e.blocks(); n != 0 {
		t.Fatalf("%d block-source actions before any approval", n)
	}
	for _, r := range e.replicas {
		if v := testutil.ToFloat64(r.approvals.pending); v != 1 {
			t.Errorf("approvals_pending = %v, want 1", v)
		}
	}
	waitEvents(t, e.kube, e.ns, "ApprovalRequested", 1)

	got, err := Decide(context.Background(), e.kube, e.ns, a.ID, true, "alice", e.clock.Now())
	if err != nil || got.State != StateApproved || got.Approver != "alice" {
		t.Fatalf("approve: %+v, %v", got, err)
	}
	e.poll()
	e.poll()
	var reqs []actions.Request
	for _, req := range e.exec.requests() {
		if req.Kind != actions.ExpireBlocks { // every round sweeps the blocklist
			reqs = append(reqs, req)
		}
	}
	if len(reqs) != 1 || reqs[0].Kind != actions.BlockSource || reqs[0].Source.String() != "203.0.113.7/32" ||
		reqs[0].Blocklist != "auth-gateway-blocklist" || reqs[0].Deployment != "nginx" || reqs[0].BlockFor != time.Hour {
		t.Fatalf("requests after approval: %+v", reqs)
	}
	closed := e.approvals(t, true)
	if len(closed) != 1 || closed[0].State != StateClosed || closed[0].Outcome != outcomeActed || closed[0].Approver != "alice" {
		t.Errorf("record after the action: %+v", closed)
	}
	if v := e.total(DecisionApproved); v != 1 {
		t.Errorf("approvals_total{decision=approved} over the replicas = %v, want 1", v)
	}
	if n := logsOf(t).count("approved by alice (approval " + a.ID); n != 1 {
		t.Errorf("%d audit lines name the approver, want 1", n)
	}
	waitEvents(t, e.kube, e.ns, "Remediated", 1)

	// A repeat of the alert is the same occurrence: no new proposal, no
	// second action.
	e.alert(t, "fp1", "203.0.113.7")
	testenv.WaitFor(t, time.Minute, "the repeated deliveries handled", func() bool { return decisions(e.replicas...) >= 8 })
	e.poll()
	if n := e.blocks(); n != 1 || len(e.approvals(t, false)) != 0 {
		t.Errorf("after a repeat: %d actions, open approvals %+v", n, e.approvals(t, false))
	}
	if _, err := Decide(context.Background(), e.kube, e.ns, a.ID, true, "bob", e.clock.Now()); !errors.Is(err, ErrApprovalDecided) {
		t.Errorf("approving a closed approval: %v, want ErrApprovalDecided", err)
	}
}

func TestConcurrentApprovalsActOnce(t *testing.T) {
	e := newApprovalEnv(t, 3, "expire_after: 10m, poll_interval: 10m", nil)
	e.alert(t, "fp2", "203.0.113.8")
	a := e.waitPending(t, 1)[0]
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Decide(context.Background(), e.kube, e.ns, a.ID, true, fmt.Sprintf("oncall-%d", i), e.clock.Now())
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrApprovalDecided):
			t.Errorf("approval: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d approvals succeeded, want 1: %v", won, errs)
	}
	e.poll()
	e.poll()
	if n := e.blocks(); n != 1 {
		t.Errorf("%d actions after concurrent approvals, want 1", n)
	}
	if v := e.total(DecisionApproved); v != 1 {
		t.Errorf("approvals_total{decision=approved} = %v, want 1", v)
	}
}

// An approval racing the expiry acts at most once, and exactly when the
// approval won.
func TestApprovalRacingExpiryActsAtMostOnce(t *testing.T) {
	e := newApprovalEnv(t, 2, "expire_after: 1m, poll_interval: 1m", nil)
	const rounds = 4
	for i := range rounds {
		e.alert(t, fmt.Sprintf("race%d", i), fmt.Sprintf("203.0.113.%d", 20+i))
	}
	pending := e.waitPending(t, rounds)
	// The person's clock still reads before the expiry; the replicas'
	// reads after it.
	personNow := e.clock.Now().Add(59 * time.Second)
	e.clock.Advance(2 * time.Minute)
	approvedIDs := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := Decide(context.Background(), e.kube, e.ns, a.ID, true, "alice", personNow)
			if err == nil {
				mu.Lock()
				approvedIDs[a.ID] = true
				mu.Unlock()
			} else if !errors.Is(err, ErrApprovalDecided) {
				t.Errorf("approve %s: %v", a.ID, err)
			}
		}()
	}
	e.poll()
	wg.Wait()
	e.poll()
	e.poll()
	if n := e.blocks(); n != len(approvedIDs) {
		t.Errorf("%d actions, %d approvals won the race", n, len(approvedIDs))
	}
	for _, a := range e.approvals(t, true) {
		want := DecisionExpired
		if approvedIDs[a.ID] {
			want = DecisionApproved
		}
		if a.State != StateClosed || a.Decision != want {
			t.Errorf("approval %s: state %s decision %s, want closed %s", a.ID, a.State, a.Decision, want)
		}
	}
	if got := e.total(DecisionApproved) + e.total(DecisionExpired); got != rounds {
		t.Errorf("approvals_total approved+expired = %v, want %d", got, rounds)
	}
}

func TestDeniedAndExpiredApprovalsNeverAct(t *testing.T) {
	e := newApprovalEnv(t, 2, "expire_after: 1m, poll_interval: 1m", nil)
	e.alert(t, "deny1", "203.0.113.30")
	e.alert(t, "late1", "203.0.113.31")
	pending := e.waitPending(t, 2)
	byTarget := map[string]Approval{}
	for _, a := range pending {
		byTarget[a.Target] = a
	}
	denied, late := byTarget["source/203.0.113.30-32"], byTarget["source/203.0.113.31-32"]
	if _, err := Decide(context.Background(), e.kube, e.ns, denied.ID, false, "alice", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.poll()
	e.clock.Advance(2 * time.Minute)
	if _, err := Decide(context.Background(), e.kube, e.ns, late.ID, true, "bob", e.clock.Now()); !errors.Is(err, ErrApprovalExpired) {
		t.Errorf("approving after the expiry: %v, want ErrApprovalExpired", err)
	}
	e.poll()
	e.poll()
	if n := e.blocks(); n != 0 {
		t.Errorf("%d actions after a denial and an expiry", n)
	}
	if d, x := e.total(DecisionDenied), e.total(DecisionExpired); d != 1 || x != 1 {
		t.Errorf("approvals_total denied %v expired %v, want 1 and 1", d, x)
	}
	waitEvents(t, e.kube, e.ns, "ApprovalDenied", 1)
	waitEvents(t, e.kube, e.ns, "ApprovalExpired", 1)
	for _, r := range e.replicas {
		if v := testutil.ToFloat64(r.approvals.pending); v != 0 {
			t.Errorf("approvals_pending = %v after both were decided", v)
		}
	}
}

func TestProtectedSourceIsNeverProposed(t *testing.T) {
	e := newApprovalEnv(t, 1, "expire_after: 10m, poll_interval: 10m", nil)
	for i, src := range []string{"10.1.2.3", "198.51.100.4", "127.0.0.1", "not-an-address"} {
		e.alert(t, fmt.Sprintf("prot%d", i), src)
	}
	testenv.WaitFor(t, time.Minute, "the deliveries handled", func() bool { return decisions(e.replicas...) >= 8 })
	if l := e.approvals(t, true); len(l) != 0 {
		t.Errorf("proposals for protected or invalid sources: %+v", l)
	}
	r := e.replicas[0]
	if n := testutil.ToFloat64(r.metrics.skipped.WithLabelValues(ReasonNotAllowed)); n != 6 {
		t.Errorf("not_allowed skips = %v, want 6 (3 protected sources, twice)", n)
	}
	if n := testutil.ToFloat64(r.metrics.skipped.WithLabelValues(ReasonInvalidTarget)); n != 2 {
		t.Errorf("invalid_target skips = %v, want 2", n)
	}
}

// The sweep removes expired entries with the real executor, whichever
// replica gets there first.
func TestSweepRemovesExpiredEntries(t *testing.T) {
	kube := kubeClient(t, kubeServer.Get(t).Config)
	ex := actions.NewExecutor(kube, newTestLogger(t), actions.WithMaxAttempts(2), actions.WithBackoff(10*time.Millisecond, 20*time.Millisecond))
	e := newApprovalEnv(t, 2, "expire_after: 10m, poll_interval: 10m", ex)
	now := time.Now().Truncate(time.Second)
	cm, err := e.kube.CoreV1().ConfigMaps(e.ns).Get(context.Background(), "auth-gateway-blocklist", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustPrefix := func(s string) actions.BlockEntry {
		p, err := actions.ParseSource(s)
		if err != nil {
			t.Fatal(err)
		}
		return actions.BlockEntry{Prefix: p}
	}
	old, current := mustPrefix("203.0.113.40"), mustPrefix("203.0.113.41")
	old.Expires, current.Expires = now.Add(-time.Minute), now.Add(time.Hour)
	cm.Data["blocklist.conf"] = actions.FormatBlocklist([]actions.BlockEntry{old, current})
	if _, err := e.kube.CoreV1().ConfigMaps(e.ns).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.poll()
	cm, err = e.kube.CoreV1().ConfigMaps(e.ns).Get(context.Background(), "auth-gateway-blocklist", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	left, err := actions.ParseBlocklist(cm.Data["blocklist.conf"])
	if err != nil || len(left) != 1 || left[0].Prefix != current.Prefix {
		t.Errorf("blocklist after the sweep: %v, %v; want only %s", left, err, current.Prefix)
	}
}

func TestApprovalsEndpoint(t *testing.T) {
	e := newApprovalEnv(t, 1, "expire_after: 10m, poll_interval: 10m", nil)
	r := e.replicas[0]
	tokens, err := ParseApprovalTokens("# on-call\ncarol:carol-token-0123456789\ndave:dave-token-0123456789\n")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.ApprovalsHandler())
	defer srv.Close()
	call := func(method, path, token, body string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := call("GET", "/api/v1/approvals", "carol-token-0123456789", ""); code != http.StatusNotFound {
		t.Errorf("without tokens configured: %d, want 404", code)
	}
	r.SetApprovalTokens(tokens)
	e.alert(t, "api1", "203.0.113.50")
	a := e.waitPending(t, 1)[0]
	for _, tok := range []string{"", testToken, "carol-token-012345678"} {
		if code, _ := call("POST", "/api/v1/approvals/"+a.ID, tok, `{"decision":"approve"}`); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d, want 401", tok, code)
		}
	}
	if code, body := call("GET", "/api/v1/approvals", "dave-token-0123456789", ""); code != http.StatusOK || !strings.Contains(body, a.ID) {
		t.Errorf("list: %d %s", code, body)
	}
	for _, body := range []string{`{"decision":"maybe"}`, `{"decision":"approve","extra":1}`, `approve`} {
		if code, _ := call("POST", "/api/v1/approvals/"+a.ID, "carol-token-0123456789", body); code != http.StatusBadRequest {
			t.Errorf("body %s: %d, want 400", body, code)
		}
	}
	if code, _ := call("POST", "/api/v1/approvals/nosuchid", "carol-token-0123456789", `{"decision":"approve"}`); code != http.StatusNotFound {
		t.Errorf("unknown id: %d, want 404", code)
	}
	if code, body := call("POST", "/api/v1/approvals/"+a.ID, "carol-token-0123456789", `{"decision":"approve"}`); code != http.StatusOK || !strings.Contains(body, `"approver":"carol"`) {
		t.Fatalf("approve: %d %s", code, body)
	}
	if code, _ := call("POST", "/api/v1/approvals/"+a.ID, "dave-token-0123456789", `{"decision":"deny"}`); code != http.StatusConflict {
		t.Errorf("second decision: %d, want 409", code)
	}
	e.poll()
	if n := e.blocks(); n != 1 {
		t.Errorf("%d actions after the approval through the endpoint", n)
	}
}

func TestParseApprovalTokens(t *testing.T) {
	for _, bad := range []string{
		"", "# only a comment\n", "carol\n", "carol:short\n", ":0123456789abcdef\n",
		"carol:0123456789abcdef\ncarol:fedcba9876543210\n",
		"carol:0123456789abcdef\ndave:0123456789abcdef\n",
	} {
		if _, err := ParseApprovalTokens(bad); err == nil {
			t.Errorf("ParseApprovalTokens(%q) accepted", bad)
		}
	}
}

func TestApprovalPolicyValidation(t *testing.T) {
	base := blockPolicy("rust-security", "")
	for _, c := range []struct{ from, to, want string }{
		{"max_entries: 5", "max_entries: -1", "block_source.max_entries"},
		{"max_entries: 5", "max_entries: 10001", "block_source.max_entries"},
		{"max_entries: 5", "max_entries: 5\n      expiry: 25h", "block_source.expiry"},
		{"protected: [198.51.100.0/28]", "protected: [office]", "block_source.protected[0]"},
		{"configmap: auth-gateway-blocklist", "configmap: Bad_Name", "block_source.configmap"},
		{"reload: {port: 8081}", "reload: {port: 0}", "block_source.reload.port"},
		{"action: block-source", "action: block-source\n    approval: maybe", "rules[0].approval"},
		{"approvals: {}", "approvals: {expire_after: 48h}", "approvals.expire_after"},
		{"action: block-source", "action: restart", "rules[0].block_source: only valid for action block-source"},
		{"action: block-source", "action: restart\n    approval: required\n    block_source_x: 1", "block_source_x"},
	} {
		if !strings.Contains(base, c.from) {
			t.Fatalf("policy has no %q", c.from)
		}
		_, err := ParsePolicy([]byte(strings.Replace(base, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.to, err, c.want)
		}
	}
	p := mustPolicy(t, base)
	r := p.Rules[0]
	if r.Approval != ApprovalRequired || r.BlockSource.Expiry != time.Hour || r.BlockSource.Label != "source" || r.BlockSource.Key != "blocklist.conf" || r.BlockSource.Reload.Path != "/-/reload" {
		t.Errorf("defaults: approval %s, block_source %+v", r.Approval, r.BlockSource)
	}
	if p.Approvals != DefaultApprovalsConfig {
		t.Errorf("approvals defaults: %+v", p.Approvals)
	}
}
