package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/warden-sre/warden/internal/testenv"
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
	if err := e.SetFault(ctx, gatewayService, map[string]any{"brute_force": map[string]any{"sources": []string{bruteForceSource}, "rate": 50}}); err != nil {
		return err
	}
	match := map[string]string{"source": bruteForceSource}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertBruteForce, "firing", match); err != nil {
		return err
	}
	if err := e.waitPaged(ctx, alertBruteForce, match); err != nil {
		return err
	}
	var id string
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		for _, d := range e.Decisions(func(d Decision) bool { return d.Alertname == alertBruteForce && d.Outcome == "pending_approval" }) {
			if m := approvalIDPattern.FindStringSubmatch(d.Detail); m != nil {
				id = m[1]
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return fmt.Errorf("waiting for the remediator to propose block-source %s: %w", bruteForceSource, err)
	}
	e.tl.Printf("STEP", "the remediator proposes block-source %s (approval %s) and waits for a person", bruteForceSource, id)
	if entries, err := e.blocklistEntries(ctx); err != nil || len(entries) != 0 {
		return fmt.Errorf("blocklist before any approval: %v, %v", entries, err)
	}
	list, err := e.oncall(ctx, "approvals")
	if err != nil {
		return err
	}
	if !strings.Contains(list, id) {
		return fmt.Errorf("approval %s not listed for the on-call:\n%s", id, list)
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
