package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

// The demo's gateway: auth-service's simulator stands in for the nginx in
// front of it too (it drops what its blocklist file denies), and a
// reloader beside it does what a config-reloader sidecar does in a
// cluster: on POST /-/reload it copies the blocklist ConfigMap into the
// file the gateway reads, then reloads the gateway. block-source reaches
// it as it would reach the gateway's pods.
const (
	gatewayService = "auth-service"
	blocklistName  = "auth-gateway-blocklist"
	blocklistKey   = "blocklist.conf"
	// oncallUser approves in the scenario; the API server puts them in
	// the group the shipped approver Role is bound to.
	oncallUser = "oncall-alice"
)

// securityEnv is the gateway and the on-call's access.
type securityEnv struct {
	gatewayPort      int
	remediatorBin    string
	oncallKubeconfig string
	server           *http.Server
}

// createManifest creates the objects of a manifest (a path from the
// module root) in the demo's namespace: ServiceAccounts (each shown to
// onServiceAccount first, which may refuse it), Roles, RoleBindings and
// ConfigMaps.
func (e *Env) createManifest(ctx context.Context, m string, onServiceAccount func(*corev1.ServiceAccount) error) error {
	c := e.Kube.Client
	raw, err := os.ReadFile(filepath.Join(e.root, m))
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			if onServiceAccount != nil {
				err = onServiceAccount(o)
			}
			if err == nil {
				_, err = c.CoreV1().ServiceAccounts(Namespace).Create(ctx, o, metav1.CreateOptions{})
			}
		case *corev1.ConfigMap:
			_, err = c.CoreV1().ConfigMaps(Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = c.RbacV1().Roles(Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = c.RbacV1().RoleBindings(Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("unexpected %T", obj)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
	}
	return nil
}

// blocklistFile is the file auth-service's gateway reads.
func (e *Env) blocklistFile() string { return filepath.Join(e.dir, gatewayService+"-blocklist.conf") }

// startGateway creates the blocklist ConfigMap and the approver Role from
// deploy/remediator, a kubeconfig for the on-call person, and the
// gateway's reloader.
func (e *Env) startGateway(ctx context.Context, remediatorBin string) error {
	e.sec.remediatorBin = remediatorBin
	for _, m := range []string{"deploy/remediator/blocklist.yaml", "deploy/remediator/approver-rbac.yaml"} {
		if err := e.createManifest(ctx, m, nil); err != nil {
			return err
		}
	}
	cfg, err := e.Kube.AddUser(oncallUser, "oncall", "system:authenticated")
	if err != nil {
		return err
	}
	e.sec.oncallKubeconfig = filepath.Join(e.dir, oncallUser+".kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, e.sec.oncallKubeconfig, Namespace); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("gateway reloader: %w", err)
	}
	e.sec.gatewayPort = ln.Addr().(*net.TCPAddr).Port
	gatewayURL := e.ServiceURLs[gatewayService]
	mux := http.NewServeMux()
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := e.syncBlocklist(r.Context(), gatewayURL); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "reloaded\n")
	})
	e.sec.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	e.goBackground(func() { _ = e.sec.server.Serve(ln) })
	e.goBackground(func() {
		<-e.bg.Done()
		_ = e.sec.server.Close()
	})
	e.say("gateway reloader for %s at 127.0.0.1:%d (blocklist ConfigMap %s -> %s)", gatewayService, e.sec.gatewayPort, blocklistName, e.blocklistFile())
	return nil
}

// syncBlocklist copies the ConfigMap into the gateway's file and reloads
// the gateway.
func (e *Env) syncBlocklist(ctx context.Context, gatewayURL string) error {
	text, err := e.blocklistText(ctx)
	if err != nil {
		return err
	}
	tmp := e.blocklistFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, e.blocklistFile()); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway reload: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	e.tl.Printf("GATEWAY", "reloaded: %s", bytes.TrimSpace(b))
	return nil
}

// gatewayDenies reads what the gateway denies now.
func (e *Env) gatewayDenies(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.ServiceURLs[gatewayService]+"/-/blocklist", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Denied []string `json:"denied"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Denied, nil
}

// blocklistText is the blocklist ConfigMap's file.
func (e *Env) blocklistText(ctx context.Context) (string, error) {
	cm, err := e.Kube.Client.CoreV1().ConfigMaps(Namespace).Get(ctx, blocklistName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return cm.Data[blocklistKey], nil
}

// blocklistEntries are the deny lines of the ConfigMap.
func (e *Env) blocklistEntries(ctx context.Context) ([]string, error) {
	text, err := e.blocklistText(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "deny ") {
			out = append(out, l)
		}
	}
	return out, nil
}

// oncall runs warden-remediator's approval subcommands as the on-call
// person, with their own kubeconfig.
func (e *Env) oncall(ctx context.Context, args ...string) (string, error) {
	args = append(args, "--kubeconfig", e.sec.oncallKubeconfig, "--namespace", Namespace)
	out, err := exec.CommandContext(ctx, e.sec.remediatorBin, args...).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		e.tl.Printf("ONCALL", "%s", l)
	}
	if err != nil {
		return string(out), fmt.Errorf("warden-remediator %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

var approvalIDPattern = regexp.MustCompile(`approval ([0-9a-f]{12})`)

// attackProposed starts an attack on the gateway (authsim's fault),
// waits until the alert fires for the source and pages, and until a
// remediator proposed block-source for it, pending approval; it returns
// the approval's id.
func (e *Env) attackProposed(ctx context.Context, fault map[string]any, alertname, source string) (string, error) {
	if err := e.SetFault(ctx, gatewayService, fault); err != nil {
		return "", err
	}
	match := map[string]string{"source": source}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertname, "firing", match); err != nil {
		return "", err
	}
	if err := e.waitPaged(ctx, alertname, match); err != nil {
		return "", err
	}
	var id string
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		for _, d := range e.Decisions(func(d Decision) bool {
			return d.Alertname == alertname && d.Outcome == "pending_approval" && strings.Contains(d.Detail, "block-source "+source+"/")
		}) {
			if m := approvalIDPattern.FindStringSubmatch(d.Detail); m != nil {
				id = m[1]
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return "", fmt.Errorf("waiting for the remediator to propose block-source %s: %w", source, err)
	}
	return id, nil
}

// oncallSees lists the open approvals as the on-call person and checks
// that id is among them.
func (e *Env) oncallSees(ctx context.Context, id string) error {
	list, err := e.oncall(ctx, "approvals")
	if err != nil {
		return err
	}
	if !strings.Contains(list, id) {
		return fmt.Errorf("approval %s not listed for the on-call:\n%s", id, list)
	}
	return nil
}

// stepBruteForceBlocked: a source guesses passwords; the remediator
// proposes to block it and waits; the on-call approves; the blocklist
// gains the entry, the gateway is reloaded and drops the source, the
// failures stop and the alert resolves; later the entry expires and the
// gateway lets the source through again.
func stepBruteForceBlocked(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	before := e.Restarts(gatewayService)
	e.tl.Printf("STEP", "%s starts guessing passwords against auth-service (50 failed logins/s)", bruteForceSource)
	match := map[string]string{"source": bruteForceSource}
	id, err := e.attackProposed(ctx, map[string]any{"brute_force": map[string]any{"sources": []string{bruteForceSource}, "rate": 50}}, alertBruteForce, bruteForceSource)
	if err != nil {
		return err
	}
	e.tl.Printf("STEP", "the remediator proposes block-source %s (approval %s) and waits for a person", bruteForceSource, id)
	if entries, err := e.blocklistEntries(ctx); err != nil || len(entries) != 0 {
		return fmt.Errorf("blocklist before any approval: %v, %v", entries, err)
	}
	if err := e.oncallSees(ctx, id); err != nil {
		return err
	}
	if _, err := e.oncall(ctx, "approve", id); err != nil {
		return err
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return len(e.Decisions(func(d Decision) bool {
			return d.Alertname == alertBruteForce && d.Outcome == "acted" && strings.Contains(d.Detail, "approved by "+oncallUser)
		})) > 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for the approved block-source: %w", err)
	}
	want := "deny " + bruteForceSource + "/32;"
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		entries, err := e.blocklistEntries(ctx)
		return err == nil && len(entries) == 1 && strings.HasPrefix(entries[0], want), nil
	}); err != nil {
		return fmt.Errorf("waiting for %q in ConfigMap %s: %w", want, blocklistName, err)
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		denied, err := e.gatewayDenies(ctx)
		return err == nil && len(denied) == 1 && denied[0] == bruteForceSource+"/32", nil
	}); err != nil {
		return fmt.Errorf("waiting for the gateway to deny %s: %w", bruteForceSource, err)
	}
	blockActed := func(d Decision) bool { return d.Alertname == alertBruteForce && d.Outcome == "acted" }
	acted := e.Decisions(blockActed)
	if len(acted) != 1 {
		return fmt.Errorf("%d block-source actions, want exactly 1: %+v", len(acted), acted)
	}
	e.tl.Printf("CHECK", "blocked once, approved by %s; the gateway drops %s, the failed logins stop", oncallUser, bruteForceSource)
	if err := e.waitResolved(ctx, alertBruteForce, match); err != nil {
		return err
	}
	if n := e.Restarts(gatewayService); n != before {
		return fmt.Errorf("auth-service was restarted during the brute-force step (%d -> %d)", before, n)
	}
	e.tl.Printf("STEP", "the attacker gives up; the block runs out on its own")
	if err := e.ResetFaults(ctx, gatewayService); err != nil {
		return err
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		entries, err := e.blocklistEntries(ctx)
		if err != nil || len(entries) != 0 {
			return false, nil
		}
		denied, err := e.gatewayDenies(ctx)
		return err == nil && len(denied) == 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for the block of %s to expire: %w", bruteForceSource, err)
	}
	e.tl.Printf("CHECK", "the entry expired: the remediator removed it and reloaded the gateway")
	if n := len(e.Decisions(blockActed)); n != 1 {
		return errors.New("a second block-source action ran")
	}
	return nil
}

// The scenario's password spraying: one source tries one password on
// sprayAccounts accounts in turn, sprayRate failed logins a second. The
// exporter's window (10 s, standing for 5 minutes) then holds about 30
// usernames with one failure each, which it classifies as spraying (from
// 20 usernames), and 30 failures: 6 per minute of the scenario, below
// BruteForceSource's 10 (50 in the window). No account is tried twice
// within the window.
const (
	sprayingSource = "198.51.100.23"
	sprayAccounts  = 40
	sprayRate      = 3
)

// bruteForcePerMinute is BruteForceSource's threshold, failed logins per
// minute from one source (rules/auth.rules.yml).
const bruteForcePerMinute = 10

// stepPasswordSprayingCaught: a source sprays one password over many
// accounts, slower than BruteForceSource's threshold; the exporter's
// classification catches it and PasswordSprayingSource pages; the
// remediator proposes to block the source; the on-call denies: the
// Event and the approval record name them, nothing is blocked. The
// spraying then stops, the alert resolves, and Prometheus's ALERTS show
// that BruteForceSource never even went pending for the source.
func stepPasswordSprayingCaught(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if entries, err := e.blocklistEntries(ctx); err != nil || len(entries) != 0 {
		return fmt.Errorf("blocklist before the spraying: %v, %v", entries, err)
	}
	start := time.Now()
	e.tl.Printf("STEP", "%s tries one password on %d accounts in turn: %d failed logins/s, %.0f per minute of the scenario, below BruteForceSource's %d",
		sprayingSource, sprayAccounts, sprayRate, float64(sprayRate*60)/float64(e.opts.TimeFactor), bruteForcePerMinute)
	match := map[string]string{"source": sprayingSource}
	id, err := e.attackProposed(ctx, map[string]any{"spraying": map[string]any{"source": sprayingSource, "accounts": sprayAccounts, "rate": sprayRate}}, alertSpraying, sprayingSource)
	if err != nil {
		return err
	}
	e.tl.Printf("STEP", "the remediator proposes block-source %s (approval %s); the on-call finds it is a partner's shared egress address, whose own users a block would cut off too, and declines",
		sprayingSource, id)
	if err := e.oncallSees(ctx, id); err != nil {
		return err
	}
	if _, err := e.oncall(ctx, "deny", id); err != nil {
		return err
	}
	// One replica closes the denial: its Event names the person, so does
	// the record, and the denial is counted once across the replicas.
	if err := e.waitEventMatching(ctx, "Deployment", gatewayService, func(ev corev1.Event) bool {
		return ev.Reason == "ApprovalDenied" && strings.Contains(ev.Message, id) && strings.Contains(ev.Message, "by "+oncallUser)
	}); err != nil {
		return err
	}
	var rec remediator.Approval
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		all, err := remediator.ListApprovals(ctx, e.Kube.Client, []string{Namespace}, true)
		if err != nil {
			return false, nil
		}
		i := slices.IndexFunc(all, func(a remediator.Approval) bool { return a.ID == id })
		if i < 0 {
			return false, nil
		}
		rec = all[i]
		return rec.State == remediator.StateClosed, nil
	}); err != nil {
		return fmt.Errorf("waiting for approval %s to be closed: %w (last seen %+v)", id, err, rec)
	}
	if rec.Decision != remediator.DecisionDenied || rec.Approver != oncallUser {
		return fmt.Errorf("approval %s closed as %q by %q, want denied by %s", id, rec.Decision, rec.Approver, oncallUser)
	}
	const denials = `sum(warden_remediator_approvals_total{decision="denied"})`
	if err := e.waitCount(ctx, denials, 1); err != nil {
		return err
	}
	// Nothing is blocked: the source still reaches the service and the
	// alert still fires.
	if entries, err := e.blocklistEntries(ctx); err != nil || len(entries) != 0 {
		return fmt.Errorf("blocklist after the denial: %v, %v", entries, err)
	}
	if denied, err := e.gatewayDenies(ctx); err != nil || len(denied) != 0 {
		return fmt.Errorf("the gateway denies %v after the denial (%v)", denied, err)
	}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertSpraying, "firing", match); err != nil {
		return err
	}
	e.tl.Printf("CHECK", "approval %s denied by %s (Event ApprovalDenied on Deployment %s, the approval record, %s = 1); nothing blocked, %s still fails logins",
		id, oncallUser, gatewayService, denials, sprayingSource)
	// The denial holds: Alertmanager's next delivery of the still firing
	// alert is declined, not proposed again.
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return len(e.Decisions(func(d Decision) bool {
			return d.Alertname == alertSpraying && d.Reason == remediator.ReasonDuplicate && strings.Contains(d.Detail, "approval "+id+" already denied")
		})) > 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for a delivery after the denial to be declined (approval %s already denied): %w", id, err)
	}

	e.tl.Printf("STEP", "the on-call has the partner find and stop the compromised client behind the address (runbook PasswordSprayingSource): the spraying ends")
	if err := e.ResetFaults(ctx, gatewayService); err != nil {
		return err
	}
	if err := e.waitResolved(ctx, alertSpraying, match); err != nil {
		return err
	}
	// Later deliveries of the occurrence found the denial: no second
	// proposal for it, and no action at all.
	for _, d := range e.Decisions(func(d Decision) bool { return d.Alertname == alertSpraying }) {
		again := d.Outcome == "pending_approval" && d.StartsAt.Equal(rec.Alert.StartsAt) && !strings.Contains(d.Detail, "approval "+id)
		if d.Outcome == "acted" || again {
			return fmt.Errorf("after the denial of %s: %s %s (%s)", id, d.Outcome, d.Action, d.Detail)
		}
	}
	return e.checkBelowBruteForce(ctx, start)
}

// checkBelowBruteForce reads from Prometheus what the per-source threshold
// saw of the spraying source since start: BruteForceSource never pending
// or firing for it (no ALERTS sample), while the source was tracked, with
// its most failed logins in the window.
func (e *Env) checkBelowBruteForce(ctx context.Context, start time.Time) error {
	over := fmt.Sprintf("%ds", int(math.Ceil(time.Since(start).Seconds())))
	alerts := fmt.Sprintf(`count_over_time(ALERTS{alertname=%q,source=%q}[%s])`, alertBruteForce, sprayingSource, over)
	s, err := e.Prometheus.Query(ctx, alerts)
	if err != nil {
		return err
	}
	if len(s) != 0 {
		return fmt.Errorf("%s = %v: BruteForceSource was %s for the spraying source", alerts, s[0].Value, s[0].Metric["alertstate"])
	}
	peakQ := fmt.Sprintf(`max_over_time(warden_auth_failed_logins_by_source{source=%q}[%s])`, sprayingSource, over)
	peak, err := e.Prometheus.Query(ctx, peakQ)
	if err != nil {
		return err
	}
	window, err := e.Prometheus.Query(ctx, `max(warden_auth_failed_logins_window_seconds)`)
	if err != nil {
		return err
	}
	if len(peak) != 1 || peak[0].Value <= 0 || len(window) != 1 || window[0].Value <= 0 {
		return fmt.Errorf("%s = %v, window %v: the spraying source was never tracked, so its silence proves nothing", peakQ, peak, window)
	}
	perMinute := peak[0].Value / (window[0].Value * float64(e.opts.TimeFactor)) * 60
	e.tl.Printf("CHECK", "BruteForceSource never pending or firing for %s (%s is empty): at most %.0f failed logins in the exporter's %.0f s window, %.1f per minute of the scenario (threshold %d)",
		sprayingSource, alerts, peak[0].Value, window[0].Value, perMinute, bruteForcePerMinute)
	return nil
}
