package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

// The binary is built, and the API server started, by the first test that
// needs them. With -short neither happens and only the in-process tests
// run.
var (
	remediatorBin = testenv.NewLazy(buildRemediator, func(b *builtBinary) { b.cleanup() })
	kubeServer    = testenv.NewLazy(startKube, (*kubeEnv).stop)
)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, kubeServer, remediatorBin)) }

type builtBinary struct {
	path    string
	cleanup func()
}

func buildRemediator() (*builtBinary, error) {
	path, cleanup, err := testenv.BuildBinary(".")
	if err != nil {
		return nil, err
	}
	return &builtBinary{path: path, cleanup: cleanup}, nil
}

// binary returns the warden-remediator under test.
func binary(t testing.TB) string {
	t.Helper()
	return remediatorBin.Get(t).path
}

// kubeEnv is the package's API server and an admin kubeconfig for it.
type kubeEnv struct {
	*testenv.Kube
	kubeconfig string
	dir        string
}

func startKube() (*kubeEnv, error) {
	k, err := testenv.NewKube()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "warden-remediator-kube-")
	if err != nil {
		k.Stop()
		return nil, err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(k.Config, path, ""); err != nil {
		k.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return &kubeEnv{Kube: k, kubeconfig: path, dir: dir}, nil
}

func (k *kubeEnv) stop() {
	k.Kube.Stop()
	os.RemoveAll(k.dir)
}

func requireKube(t *testing.T) *kubeEnv {
	t.Helper()
	return kubeServer.Get(t)
}

var nsSeq atomic.Int64

// createDeployment creates a fresh namespace named after prefix, with one
// Deployment in it, and returns the namespace's name.
func createDeployment(t *testing.T, prefix, name string) string {
	t.Helper()
	k := requireKube(t)
	ctx := context.Background()
	ns := fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1))
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(1)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	created, err := k.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No deployment controller here: report the rollout as finished, or
	// the remediator's rollout gate refuses to act.
	created.Status = appsv1.DeploymentStatus{ObservedGeneration: created.Generation, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas}
	if _, err := k.Client.AppsV1().Deployments(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// restartPolicy acts with a restart on alert alertname in namespace ns.
func restartPolicy(rule, alertname, ns string) string {
	return fmt.Sprintf(`rules:
  - name: %s
    matchers: ['alertname="%s"']
    action: restart
    target:
      namespace: '{{ .Labels.namespace }}'
      deployment: '{{ .Labels.deployment }}'
    allow:
      namespaces: [%s]
      deployments: [auth-service]
`, rule, alertname, ns)
}

// flushPolicy is a flush-cache rule on a configured Redis target; %s is the
// target's extra settings.
const flushPolicy = `redis:
  - name: session-cache
    address: 127.0.0.1:1
    coordination_db: 15
%s
rules:
  - name: flush
    matchers: ['alertname="CacheStale"']
    action: flush-cache
    target: {redis: session-cache}
    allow: {redis_targets: [session-cache]}
`

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	tokenFile := testenv.WriteFile(t, dir, "token", "s3cret-token\n")
	pwFile := testenv.WriteFile(t, dir, "redis-pw", "redis-pw\n")
	tests := []struct {
		name     string
		policy   string
		args     []string
		wantCode int
		wantOut  []string
	}{
		{
			name:     "valid policy",
			policy:   restartPolicy("restart-on-memory", "HighMemoryUsage", "rust-security"),
			args:     []string{"--web.bearer-token-file=" + tokenFile},
			wantCode: 0,
			wantOut:  []string{"1 rules", "mode first_match", "OK"},
		},
		{
			name:     "valid policy without credentials (check covers the policy alone)",
			policy:   restartPolicy("restart-on-memory", "HighMemoryUsage", "rust-security"),
			wantCode: 0,
			wantOut:  []string{"OK"},
		},
		{
			name:     "valid flush-cache policy with an enabled target and a password file",
			policy:   fmt.Sprintf(flushPolicy, "    enabled: true\n    password_file: "+pwFile),
			wantCode: 0,
			wantOut:  []string{"1 rules, 1 redis targets", "OK"},
		},
		{
			// docs/remediator.md: "flush-cache refuses a target without
			// it" and records `disabled` at run time (see
			// TestFlushCacheOnDisabledTargetIsRefused); the policy itself is
			// valid.
			name:     "flush-cache target without enabled is valid, refused at run time",
			policy:   fmt.Sprintf(flushPolicy, ""),
			wantCode: 0,
			wantOut:  []string{"OK"},
		},
		{
			name:     "unknown field",
			policy:   strings.Replace(restartPolicy("r", "A", "ns"), "    action: restart\n", "    action: restart\n    cooldwon: 5m\n", 1),
			wantCode: 1,
			wantOut:  []string{"field cooldwon not found"},
		},
		{
			name:     "a parameter block of another action",
			policy:   strings.Replace(restartPolicy("r", "A", "ns"), "    action: restart\n", "    action: restart\n    scale: {max_replicas: 5}\n", 1),
			wantCode: 1,
			wantOut:  []string{"rules[0].scale: only valid for action scale, not restart"},
		},
		{
			name:     "bad matcher syntax",
			policy:   strings.Replace(restartPolicy("r", "A", "ns"), `matchers: ['alertname="A"']`, `matchers: ['{alertname="A"']`, 1),
			wantCode: 1,
			wantOut:  []string{"rules[0].matchers[0]", "unexpected open or close brace"},
		},
		{
			name:     "bad matcher regexp",
			policy:   strings.Replace(restartPolicy("r", "A", "ns"), `matchers: ['alertname="A"']`, `matchers: ['alertname=~"(unclosed"']`, 1),
			wantCode: 1,
			wantOut:  []string{"rules[0].matchers[0]", "error parsing regexp"},
		},
		{
			name:     "template syntax error",
			policy:   strings.Replace(restartPolicy("r", "A", "ns"), `'{{ .Labels.deployment }}'`, `'{{ .Labels.deployment '`, 1),
			wantCode: 1,
			wantOut:  []string{"rules[0].target.deployment", "template", "unclosed action"},
		},
		{
			name:     "missing allowlist",
			policy:   "rules:\n  - name: r\n    matchers: ['alertname=\"A\"']\n    action: restart\n    target: {namespace: ns, deployment: d}\n",
			wantCode: 1,
			wantOut:  []string{"rules[0].allow.namespaces: required for action restart"},
		},
		{
			name:     "flush-cache on a target that is not configured",
			policy:   strings.Replace(fmt.Sprintf(flushPolicy, "    enabled: true"), "redis_targets: [session-cache]", "redis_targets: [other-cache]", 1),
			wantCode: 1,
			wantOut:  []string{"rules[0].allow.redis_targets[0]", "other-cache", "not a configured redis target"},
		},
		{
			name:     "missing redis password file",
			policy:   fmt.Sprintf(flushPolicy, "    enabled: true\n    password_file: /nonexistent/redis-pw"),
			wantCode: 1,
			wantOut:  []string{"redis[0].password_file", "/nonexistent/redis-pw", "no such file or directory"},
		},
		{
			name:     "missing bearer token file",
			policy:   restartPolicy("r", "A", "ns"),
			args:     []string{"--web.bearer-token-file=/nonexistent/token"},
			wantCode: 1,
			wantOut:  []string{"--web.bearer-token-file", "/nonexistent/token", "no such file or directory"},
		},
		{
			name:     "empty bearer token file",
			policy:   restartPolicy("r", "A", "ns"),
			args:     []string{"--web.bearer-token-file=" + testenv.WriteFile(t, dir, "empty-token", "\n")},
			wantCode: 1,
			wantOut:  []string{"--web.bearer-token-file", "is empty"},
		},
		{
			name:     "basic-auth user without password file",
			policy:   restartPolicy("r", "A", "ns"),
			args:     []string{"--web.basic-auth.username=alertmanager"},
			wantCode: 1,
			wantOut:  []string{"--web.basic-auth.username needs --web.basic-auth.password-file"},
		},
		{
			name:     "not yaml",
			policy:   "rules: [\n",
			wantCode: 1,
			wantOut:  []string{"parse policy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testenv.WriteFile(t, t.TempDir(), "remediator.yml", tt.policy)
			code, out := testenv.RunBinary(t, 30*time.Second, binary(t), append([]string{"--config.file=" + cfg, "--config.check"}, tt.args...)...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.wantOut {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
			if bytes.Contains(out, []byte("panic")) || bytes.Contains(out, []byte("goroutine ")) {
				t.Errorf("output shows a panic:\n%s", out)
			}
		})
	}

	t.Run("missing policy file", func(t *testing.T) {
		code, out := testenv.RunBinary(t, 30*time.Second, binary(t), "--config.file=/nonexistent/remediator.yml", "--config.check")
		if code == 0 {
			t.Fatalf("exit code 0 for a missing policy file:\n%s", out)
		}
		if !bytes.Contains(out, []byte("/nonexistent/remediator.yml")) {
			t.Errorf("output does not name the file:\n%s", out)
		}
	})
}

// remediatorProc is a running warden-remediator.
type remediatorProc struct{ *testenv.Binary }

// waitOutput waits until cond holds on the process's output: log lines
// travel through a pipe and may arrive after the metric or reply the test
// waited for. The output is logged if the test fails.
func (p *remediatorProc) waitOutput(t *testing.T, what string, cond func(out string) bool) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, what, func() bool { return cond(p.Output()) })
}

// startRemediator starts the binary on a free loopback port with the
// package's kubeconfig and waits until /-/ready answers 200.
func startRemediator(t *testing.T, policyPath string, args ...string) *remediatorProc {
	t.Helper()
	k := requireKube(t)
	all := append([]string{
		"--config.file=" + policyPath,
		"--kubeconfig=" + k.kubeconfig,
		"--identity=warden-remediator-test",
		"--log.level=debug",
	}, args...)
	return &remediatorProc{testenv.StartBinary(t, binary(t), all...)}
}

func (p *remediatorProc) metrics(t *testing.T) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.URL + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape status %d:\n%s", resp.StatusCode, b)
	}
	return string(b)
}

// reload posts to /-/reload; auth, when not empty, is the Authorization
// header.
func (p *remediatorProc) reload(t *testing.T, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL+"/-/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// send posts a webhook body; auth, when not empty, is the Authorization
// header.
func (p *remediatorProc) send(t *testing.T, auth string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL+"/api/v1/alerts", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// alert is one alert of a webhook payload.
type alert struct {
	labels      map[string]string
	fingerprint string
	startsAt    time.Time
}

// payload is an Alertmanager webhook body, version 4, as Alertmanager's
// notify/webhook sends it.
func payload(t *testing.T, alerts ...alert) []byte {
	t.Helper()
	type amAlert struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	}
	msg := map[string]any{
		"version":           "4",
		"groupKey":          `{}:{alertname="test"}`,
		"truncatedAlerts":   0,
		"status":            "firing",
		"receiver":          "warden-remediator",
		"groupLabels":       map[string]string{},
		"commonLabels":      map[string]string{},
		"commonAnnotations": map[string]string{},
		"externalURL":       "http://alertmanager.example:9093",
	}
	var list []amAlert
	for _, a := range alerts {
		list = append(list, amAlert{
			Status:       "firing",
			Labels:       a.labels,
			Annotations:  map[string]string{"summary": "test"},
			StartsAt:     a.startsAt,
			GeneratorURL: "http://prometheus.example:9090/graph",
			Fingerprint:  a.fingerprint,
		})
	}
	msg["alerts"] = list
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deployAlert is a firing alert about Deployment auth-service in ns; each
// distinct fingerprint is a new alert occurrence.
func deployAlert(alertname, ns, fingerprint string) alert {
	return alert{
		labels:      map[string]string{"alertname": alertname, "namespace": ns, "deployment": "auth-service"},
		fingerprint: fingerprint,
		startsAt:    time.Now().UTC().Truncate(time.Second),
	}
}

func waitMetric(t *testing.T, p *remediatorProc, line string) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, "metric line "+line, func() bool { return testenv.ContainsLine(p.metrics(t), line) })
}

// auditLines returns the audit log lines ("remediation decision") that
// contain every one of the given fields.
func auditLines(out string, fields ...string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `msg="remediation decision"`) {
			continue
		}
		ok := true
		for _, f := range fields {
			if !strings.Contains(l, f) {
				ok = false
				break
			}
		}
		if ok {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestAuthenticationRequired(t *testing.T) {
	kubeconfigPath := requireKube(t).kubeconfig
	policy := testenv.WriteFile(t, t.TempDir(), "remediator.yml", restartPolicy("r", "A", "ns"))

	t.Run("refuses to start without credentials", func(t *testing.T) {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		code, out := testenv.RunBinary(t, 30*time.Second, binary(t), "--config.file="+policy, "--kubeconfig="+kubeconfigPath,
			fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
		if code == 0 {
			t.Fatalf("exit code 0 without credentials:\n%s", out)
		}
		for _, w := range []string{"no webhook authentication configured", "--web.bearer-token-file", "--no-auth"} {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("output does not mention %q:\n%s", w, out)
			}
		}
	})

	t.Run("starts with --no-auth and warns", func(t *testing.T) {
		p := startRemediator(t, policy, "--no-auth")
		p.waitOutput(t, "a warning about disabled authentication", func(out string) bool {
			return strings.Contains(out, "level=WARN") && strings.Contains(out, "authentication is DISABLED")
		})
		// Anyone is accepted.
		code, _, body := p.send(t, "", payload(t, deployAlert("Unrelated", "ns", "f00")))
		if code != http.StatusAccepted {
			t.Errorf("webhook without credentials under --no-auth: status %d (%s), want 202", code, body)
		}
	})
}

func TestWebhookAuthentication(t *testing.T) {
	dir := t.TempDir()
	const token = "0123456789abcdef-token"
	// Surrounding white space is trimmed, as Alertmanager's
	// credentials_file does.
	tokenFile := testenv.WriteFile(t, dir, "token", token+" \n")
	pwFile := testenv.WriteFile(t, dir, "password", "am-password \n")
	policy := testenv.WriteFile(t, dir, "remediator.yml", restartPolicy("r", "A", "ns"))
	p := startRemediator(t, policy, "--web.bearer-token-file="+tokenFile,
		"--web.basic-auth.username=alertmanager", "--web.basic-auth.password-file="+pwFile)
	body := payload(t, deployAlert("Unrelated", "ns", "a1"))

	tests := []struct {
		name     string
		auth     string
		wantCode int
	}{
		{"missing credentials", "", http.StatusUnauthorized},
		{"wrong bearer token", "Bearer wrong-token", http.StatusUnauthorized},
		{"token prefix only", "Bearer " + token[:10], http.StatusUnauthorized},
		{"wrong basic-auth password", basicAuth("alertmanager", "nope"), http.StatusUnauthorized},
		{"correct bearer token", "Bearer " + token, http.StatusAccepted},
		{"correct basic auth", basicAuth("alertmanager", "am-password"), http.StatusAccepted},
	}
	want := map[int]int{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, resp := p.send(t, tt.auth, body)
			if code != tt.wantCode {
				t.Fatalf("status %d (%s), want %d", code, resp, tt.wantCode)
			}
			if code == http.StatusUnauthorized && !strings.Contains(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: WWW-Authenticate %q", hdr.Get("WWW-Authenticate"))
			}
			if code == http.StatusAccepted && !strings.Contains(resp, `"alerts":1`) {
				t.Errorf("202 body %q does not report the queued alert", resp)
			}
		})
		want[tt.wantCode]++
	}
	m := p.metrics(t)
	for code, n := range want {
		line := fmt.Sprintf(`warden_remediator_webhook_requests_total{code="%d"} %d`, code, n)
		if !testenv.ContainsLine(m, line) {
			t.Errorf("metrics lack %q", line)
		}
	}
	// The policy matches nothing here: the refusal is recorded.
	waitMetric(t, p, fmt.Sprintf(`warden_remediator_skipped_total{reason="no_matching_rule"} %d`, want[http.StatusAccepted]))

	// A reload re-reads the token file: the rotated token is accepted, the
	// old one refused.
	const rotated = "rotated-token-0987654321"
	testenv.WriteFile(t, dir, "token", rotated+"\n")
	if code, resp := p.reload(t, "Bearer "+token); code != http.StatusOK {
		t.Fatalf("reload after rotating the token: status %d %q", code, resp)
	}
	if code, _, resp := p.send(t, "Bearer "+token, body); code != http.StatusUnauthorized {
		t.Errorf("old token after rotation: status %d (%s), want 401", code, resp)
	}
	if code, _, resp := p.send(t, "Bearer "+rotated, body); code != http.StatusAccepted {
		t.Errorf("rotated token: status %d (%s), want 202", code, resp)
	}
	// A token file that disappears fails the reload; the credentials in
	// force stay.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	if code, resp := p.reload(t, "Bearer "+rotated); code != http.StatusInternalServerError || strings.Contains(resp, tokenFile) {
		t.Errorf("reload without the token file: status %d %q, want 500 without the file's path", code, resp)
	}
	p.waitOutput(t, "the failed reload logged naming --web.bearer-token-file", func(out string) bool {
		return strings.Contains(out, "reload failed") && strings.Contains(out, "--web.bearer-token-file")
	})
	requireLine(t, p.metrics(t), "warden_remediator_config_last_reload_successful 0")
	if code, _, resp := p.send(t, "Bearer "+rotated, body); code != http.StatusAccepted {
		t.Errorf("token in force after a failed reload: status %d (%s), want 202", code, resp)
	}
}

func TestListenFailureExitsNonZero(t *testing.T) {
	kubeconfigPath := requireKube(t).kubeconfig
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	policy := testenv.WriteFile(t, t.TempDir(), "remediator.yml", restartPolicy("r", "A", "ns"))
	code, out := testenv.RunBinary(t, 30*time.Second, binary(t), "--config.file="+policy, "--kubeconfig="+kubeconfigPath,
		"--no-auth", "--web.listen-address="+l.Addr().String())
	if code == 0 {
		t.Fatalf("exit code 0 on a busy port:\n%s", out)
	}
	if !bytes.Contains(out, []byte("address already in use")) {
		t.Errorf("output does not say the address is in use:\n%s", out)
	}
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

func TestReloadKeepsPreviousPolicyWhenNewOneIsInvalid(t *testing.T) {
	ns := createDeployment(t, "reload-test", "auth-service")
	dir := t.TempDir()
	const token = "reload-token"
	tokenFile := testenv.WriteFile(t, dir, "token", token)
	policyPath := testenv.WriteFile(t, dir, "remediator.yml", restartPolicy("old-rule", "OldAlert", ns))
	p := startRemediator(t, policyPath, "--web.bearer-token-file="+tokenFile, "--dry-run")
	auth := "Bearer " + token

	sendAlert := func(t *testing.T, a alert) {
		t.Helper()
		if code, _, body := p.send(t, auth, payload(t, a)); code != http.StatusAccepted {
			t.Fatalf("webhook: status %d (%s), want 202", code, body)
		}
	}
	restartDryRuns := func(n int) string {
		return fmt.Sprintf(`warden_remediator_actions_total{action="restart",outcome="dry_run"} %d`, n)
	}

	sendAlert(t, deployAlert("OldAlert", ns, "old1"))
	waitMetric(t, p, restartDryRuns(1))
	requireLine(t, p.metrics(t), "warden_remediator_config_last_reload_successful 1")

	// Invalid policy via SIGHUP: rejected, the old rule still acts.
	testenv.WriteFile(t, dir, "remediator.yml", strings.Replace(restartPolicy("new-rule", "NewAlert", ns), "action: restart", "action: restart\n    cooldwon: 1m", 1))
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, p, "warden_remediator_config_last_reload_successful 0")
	p.waitOutput(t, "the failed reload to be logged with its reason", func(out string) bool {
		return strings.Contains(out, "reload failed, keeping the previous policy") && strings.Contains(out, "cooldwon")
	})
	sendAlert(t, deployAlert("OldAlert", ns, "old2"))
	waitMetric(t, p, restartDryRuns(2))

	// Invalid policy via the HTTP endpoint: 500 naming the problem, old
	// rule still acts.
	testenv.WriteFile(t, dir, "remediator.yml", strings.Replace(restartPolicy("new-rule", "NewAlert", ns), `'{{ .Labels.deployment }}'`, `'{{ .Labels.deployment '`, 1))
	if code, body := p.reload(t, ""); code != http.StatusUnauthorized || strings.Contains(body, "rules[0]") || strings.Contains(body, policyPath) {
		t.Fatalf("POST /-/reload without credentials: status %d %q, want 401 revealing nothing", code, body)
	}
	code, body := p.reload(t, auth)
	if code != http.StatusInternalServerError || strings.Contains(body, "rules[0]") || strings.Contains(body, policyPath) {
		t.Fatalf("POST /-/reload with invalid policy: status %d %q, want 500 without the policy path or the YAML error", code, body)
	}
	p.waitOutput(t, "the failed reload logged naming rules[0].target.deployment", func(out string) bool {
		return strings.Contains(out, "rules[0].target.deployment")
	})
	requireLine(t, p.metrics(t), "warden_remediator_config_last_reload_successful 0")
	sendAlert(t, deployAlert("OldAlert", ns, "old3"))
	waitMetric(t, p, restartDryRuns(3))
	oldRuleLines := func(out string) int {
		return len(auditLines(out, "rule=old-rule", "outcome=dry_run", "alertname=OldAlert"))
	}
	p.waitOutput(t, "3 dry-run audit lines for old-rule", func(out string) bool { return oldRuleLines(out) == 3 })

	// Valid new policy: a scale rule for NewAlert replaces the old rule.
	newPolicy := fmt.Sprintf(`rules:
  - name: new-rule
    matchers: ['alertname="NewAlert"']
    action: scale
    target:
      namespace: '{{ .Labels.namespace }}'
      deployment: '{{ .Labels.deployment }}'
    allow:
      namespaces: [%s]
      deployments: [auth-service]
    scale: {replicas: 3, max_replicas: 5}
`, ns)
	testenv.WriteFile(t, dir, "remediator.yml", newPolicy)
	if code, body := p.reload(t, auth); code != http.StatusOK {
		t.Fatalf("POST /-/reload with valid policy: status %d %q, want 200", code, body)
	}
	requireLine(t, p.metrics(t), "warden_remediator_config_last_reload_successful 1")
	sendAlert(t, deployAlert("NewAlert", ns, "new1"))
	waitMetric(t, p, `warden_remediator_actions_total{action="scale",outcome="dry_run"} 1`)
	newRuleLines := func(out string) int {
		return len(auditLines(out, "rule=new-rule", "outcome=dry_run", "would scale 1 -> 3"))
	}
	p.waitOutput(t, "1 dry-run audit line for new-rule scaling 1 -> 3", func(out string) bool { return newRuleLines(out) == 1 })
	// The old rule is gone.
	sendAlert(t, deployAlert("OldAlert", ns, "old4"))
	waitMetric(t, p, `warden_remediator_skipped_total{reason="no_matching_rule"} 1`)
	requireLine(t, p.metrics(t), restartDryRuns(3))

	// Dry-run changed nothing.
	d, err := requireKube(t).Client.AppsV1().Deployments(ns).Get(context.Background(), "auth-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 1 || d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] != "" {
		t.Errorf("dry run changed the Deployment: replicas %d, template annotations %v", *d.Spec.Replicas, d.Spec.Template.Annotations)
	}

	getReq, _ := http.NewRequest(http.MethodGet, p.URL+"/-/reload", nil)
	getReq.Header.Set("Authorization", auth)
	if resp, err := http.DefaultClient.Do(getReq); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /-/reload: status %d, want 405", resp.StatusCode)
		}
	}
}

func requireLine(t *testing.T, body, line string) {
	t.Helper()
	if !testenv.ContainsLine(body, line) {
		t.Errorf("metrics lack %q", line)
	}
}

func TestFlushCacheOnDisabledTargetIsRefused(t *testing.T) {
	dir := t.TempDir()
	// No "enabled: true" on the target.
	policy := testenv.WriteFile(t, dir, "remediator.yml", fmt.Sprintf(flushPolicy, ""))
	p := startRemediator(t, policy, "--no-auth")
	a := alert{labels: map[string]string{"alertname": "CacheStale"}, fingerprint: "c1", startsAt: time.Now().UTC()}
	if code, _, body := p.send(t, "", payload(t, a)); code != http.StatusAccepted {
		t.Fatalf("webhook: status %d (%s), want 202", code, body)
	}
	waitMetric(t, p, `warden_remediator_skipped_total{reason="disabled"} 1`)
	refusals := func(out string) int {
		return len(auditLines(out, "rule=flush", "outcome=skipped", "reason=disabled", "enabled: true"))
	}
	p.waitOutput(t, "1 audit line refusing the flush as disabled", func(out string) bool { return refusals(out) == 1 })
	requireLine(t, p.metrics(t), `warden_remediator_actions_total{action="flush-cache",outcome="success"} 0`)
}

func TestMetricsOutputPassesPromtoolLint(t *testing.T) {
	ns := createDeployment(t, "metrics-test", "auth-service")
	testenv.Promtool(t)
	policy := testenv.WriteFile(t, t.TempDir(), "remediator.yml", restartPolicy("r", "HighMemoryUsage", ns))
	p := startRemediator(t, policy, "--no-auth", "--dry-run")
	// Traffic, so the histograms, the breaker gauge and the counters carry
	// samples.
	if code, _, body := p.send(t, "", payload(t, deployAlert("HighMemoryUsage", ns, "m1"), deployAlert("Other", ns, "m2"))); code != http.StatusAccepted {
		t.Fatalf("webhook: status %d (%s)", code, body)
	}
	if code, _, _ := p.send(t, "", []byte(`{"version":"3"}`)); code != http.StatusBadRequest {
		t.Errorf("version 3 payload: status %d, want 400", code)
	}
	waitMetric(t, p, `warden_remediator_actions_total{action="restart",outcome="dry_run"} 1`)
	body := p.metrics(t)
	for _, name := range []string{
		"warden_remediator_actions_total", "warden_remediator_skipped_total", "warden_remediator_webhook_requests_total",
		"warden_remediator_webhook_duration_seconds_bucket", "warden_remediator_queue_depth",
		"warden_remediator_action_duration_seconds_bucket", "warden_remediator_config_last_reload_successful",
		"warden_remediator_config_last_reload_success_timestamp_seconds", "process_cpu_seconds_total", "go_goroutines",
	} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	testenv.CheckMetrics(t, "warden-remediator /metrics", body)
}

func TestSIGTERMExitsWithinGracePeriod(t *testing.T) {
	ns := createDeployment(t, "sigterm-test", "auth-service")
	policy := testenv.WriteFile(t, t.TempDir(), "remediator.yml", restartPolicy("r", "HighMemoryUsage", ns))
	// The grace period is long enough for a loaded machine to finish the
	// queue; exiting well before it shows that the process leaves as soon
	// as the acknowledged work is done.
	const grace = 2 * time.Minute
	p := startRemediator(t, policy, "--no-auth", "--dry-run", "--shutdown.grace-period="+grace.String())
	// Queued work is finished before the exit.
	if code, _, body := p.send(t, "", payload(t, deployAlert("HighMemoryUsage", ns, "s1"))); code != http.StatusAccepted {
		t.Fatalf("webhook: status %d (%s)", code, body)
	}
	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited:
	case <-time.After(grace + 30*time.Second):
		t.Fatalf("still running %s after SIGTERM (grace period %s)", time.Since(start), grace)
	}
	took := time.Since(start)
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if took >= grace {
		t.Errorf("exit took %s: it waited out the grace period %s instead of leaving once the queue was done", took, grace)
	}
	out := p.Output()
	if !strings.Contains(out, "shutting down") || !strings.Contains(out, "signal=terminated") {
		t.Errorf("no shutdown log line naming the signal:\n%s", out)
	}
	if len(auditLines(out, "alertname=HighMemoryUsage", "outcome=dry_run")) != 1 {
		t.Errorf("the alert queued before SIGTERM was not handled:\n%s", out)
	}
	if strings.Contains(out, "shutdown incomplete") {
		t.Errorf("shutdown did not finish the queue:\n%s", out)
	}
}

func TestLoadAuthReadsCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	token := testenv.WriteFile(t, dir, "token", "  s3cret-token\n")
	password := testenv.WriteFile(t, dir, "password", "am-password\r\n")
	empty := testenv.WriteFile(t, dir, "empty", "\n")
	tests := []struct {
		name    string
		flags   flags
		require bool
		want    remediator.Auth
		wantErr string
	}{
		{"bearer token, white space trimmed", flags{tokenFile: token}, true, remediator.Auth{BearerToken: "s3cret-token"}, ""},
		{"basic auth", flags{basicUser: "am", basicPassFile: password}, true, remediator.Auth{Username: "am", Password: "am-password"}, ""},
		{"nothing configured", flags{}, true, remediator.Auth{}, "no webhook authentication configured"},
		{"nothing configured, not required (--config.check)", flags{}, false, remediator.Auth{}, ""},
		{"--no-auth", flags{noAuth: true}, true, remediator.Auth{Disabled: true}, ""},
		{"empty token file", flags{tokenFile: empty}, true, remediator.Auth{}, "--web.bearer-token-file"},
		{"missing token file", flags{tokenFile: filepath.Join(dir, "missing")}, true, remediator.Auth{}, "--web.bearer-token-file"},
		{"user without password file", flags{basicUser: "am"}, true, remediator.Auth{}, "--web.basic-auth.username needs --web.basic-auth.password-file"},
		{"password file without user", flags{basicPassFile: password}, true, remediator.Auth{}, "--web.basic-auth.password-file needs --web.basic-auth.username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.flags.loadAuth(tt.require)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadAuth: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("loadAuth = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
