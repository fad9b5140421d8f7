// Package demo runs warden's whole loop on loopback, for `make demo` and
// the end-to-end test: PostgreSQL (TLS, pg_stat_statements) with a
// streaming replica, Redis (plain and TLS), two auth-service simulators,
// session traffic on the datastores, warden-exporter with every collector,
// Prometheus with the rules, Alertmanager, two warden-remediator replicas
// and a kube-apiserver with a stand-in kubelet and a TLS Secret, and plays
// a scripted scenario against it (see Steps).
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

// Namespace is where the demo's workloads live.
const Namespace = "rust-security"

// Services are the simulated workloads the kubelet stand-in runs.
var Services = []string{"auth-service", "policy-service"}

// Options tune a demo run.
type Options struct {
	// Timeline receives the human-readable account; nil discards it.
	Timeline *Timeline
	// TimeFactor compresses the rules' time (default 30: 5m becomes 10s).
	TimeFactor int
	// RepeatInterval is Alertmanager's repeat_interval (default 10s): each
	// firing alert is delivered again that often.
	RepeatInterval time.Duration
	// Cooldown is the remediator's per-target cooldown (default 45s).
	Cooldown time.Duration
	// StickyDelay is how long after a restart a fault that restarts do not
	// fix comes back (default 20s).
	StickyDelay time.Duration
}

// Env is a running demo.
type Env struct {
	opts Options
	tl   *Timeline
	dir  string
	root string

	Postgres *testenv.Postgres
	// PostgresReplica streams from Postgres, so replication is real.
	PostgresReplica *testenv.Postgres
	Redis           *testenv.Redis
	// RedisTLSAddr is Redis's TLS port (plain TCP stays on Redis.Addr).
	RedisTLSAddr string
	Kube         *testenv.Kube
	Prometheus   *testenv.Prometheus
	Alertmanager *testenv.Alertmanager

	// ServiceURLs are the simulators' base URLs by Deployment name.
	ServiceURLs map[string]string
	// ExporterURL and RemediatorURLs are the warden processes' base URLs.
	ExporterURL    string
	RemediatorURLs []string
	pki            *pki
	// exporterKubeconfig authenticates the exporter as its ServiceAccount
	// (it lists TLS Secrets).
	exporterKubeconfig string
	// token authenticates webhook deliveries; tokenFile holds it for the
	// remediators and Alertmanager.
	token     string
	tokenFile string
	// statusPassword is the basic-auth password of the remediators'
	// status pages (user StatusUser), for a person's browser.
	statusPassword string
	pagerURL       string

	kubelet    *kubelet
	sec        securityEnv // the gateway and the on-call (scenario_security.go)
	exporter   *testenv.Process
	remediator []*testenv.Process
	decisions  *decisionLog
	pager      *pager
	pagerSrv   *http.Server

	stickyMu sync.Mutex
	sticky   map[string]string // service -> fault JSON re-applied after every restart

	bg     context.Context // ends with Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// verifyWindow is the production verification window (10m: the rules
// look back 5m) compressed like the rules' time, but never shorter than
// 30s, which a rollout and a resolved notification need on a loaded
// machine.
func (o Options) verifyWindow() time.Duration {
	return max(10*time.Minute/time.Duration(o.TimeFactor), 30*time.Second)
}

// recentRollout is gates.recent_rollout (10m in production) compressed
// like the rules' time.
func (o Options) recentRollout() time.Duration {
	return 10 * time.Minute / time.Duration(o.TimeFactor)
}

// withDefaults fills in the options left zero.
func (o Options) withDefaults() Options {
	if o.Timeline == nil {
		o.Timeline = NewTimeline(io.Discard)
	}
	if o.TimeFactor == 0 {
		o.TimeFactor = 30
	}
	if o.RepeatInterval == 0 {
		o.RepeatInterval = 10 * time.Second
	}
	if o.Cooldown == 0 {
		o.Cooldown = 45 * time.Second
	}
	if o.StickyDelay == 0 {
		o.StickyDelay = 20 * time.Second
	}
	return o
}

// Start brings the whole loop up, in the order each part needs the
// previous ones: datastores and the cluster, the simulated services, the
// exporter, the remediators, Alertmanager (which delivers to them) and
// Prometheus (which alerts to it). On error everything already started is
// stopped again.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	opts = opts.withDefaults()
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "warden-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo temp dir: %w", err)
	}
	e := &Env{opts: opts, tl: opts.Timeline, dir: dir, root: root, ServiceURLs: map[string]string{}, decisions: &decisionLog{}, sticky: map[string]string{}}
	e.bg, e.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()

	bins, err := buildBinaries(ctx, root, filepath.Join(dir, "bin"), e.say, "authsim", "warden-exporter", "warden-remediator")
	if err != nil {
		return nil, err
	}
	// One listener per simulator, the exporter, each remediator and the pager.
	ports, err := freePorts(len(Services) + 1 + remediatorReplicas + 1)
	if err != nil {
		return nil, err
	}
	addr := func() string {
		a := "127.0.0.1:" + strconv.Itoa(ports[0])
		ports = ports[1:]
		return a
	}
	if e.pki, err = newPKI(dir); err != nil {
		return nil, fmt.Errorf("demo certificates: %w", err)
	}
	if err := e.startDatastores(ctx); err != nil {
		return nil, err
	}
	kubeconfig, err := e.startCluster(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.startServices(ctx, bins["authsim"], addr); err != nil {
		return nil, err
	}
	if err := e.startGateway(ctx, bins["warden-remediator"]); err != nil {
		return nil, err
	}
	if err := e.startExporter(ctx, bins["warden-exporter"], addr()); err != nil {
		return nil, err
	}
	// Alertmanager needs the remediators' addresses and token; the
	// remediators read alert state from Alertmanager (stale check, gates,
	// verification), so their addresses are chosen first and they start
	// once Alertmanager runs.
	if err := e.prepareRemediators(addr); err != nil {
		return nil, err
	}
	if err := e.startAlertmanager(ctx, addr()); err != nil {
		return nil, err
	}
	if err := e.startRemediators(ctx, bins["warden-remediator"], kubeconfig); err != nil {
		return nil, err
	}
	if err := e.startPrometheus(ctx); err != nil {
		return nil, err
	}
	e.goBackground(func() { watchAlerts(e.bg, e.Prometheus, e.tl) })
	return e, nil
}

// remediatorReplicas is how many warden-remediator processes share the
// webhook deliveries, as an HA deployment does.
const remediatorReplicas = 2

func (e *Env) say(format string, args ...any) { e.tl.Printf("SETUP", format, args...) }

// startDatastores starts PostgreSQL (TLS on, pg_stat_statements loaded)
// with a streaming replica, and Redis with a TLS port beside the plain one,
// prepares auth-service's sessions table and starts the session traffic
// that uses both (see sessionTraffic).
func (e *Env) startDatastores(ctx context.Context) (err error) {
	e.say("starting PostgreSQL (TLS, pg_stat_statements) with a streaming replica, and Redis (plain and TLS ports)")
	pgCert, err := e.pki.issue("auth-db.rust-security.svc", time.Now(), serverValidity)
	if err != nil {
		return err
	}
	if e.Postgres, err = testenv.NewPostgres(
		testenv.WithPostgresTLS(certgen.ChainPEM(pgCert, e.pki.intermediate), pgCert.KeyPEM()),
		testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"),
	); err != nil {
		return err
	}
	if err := e.Postgres.Exec(ctx, "postgres", "CREATE EXTENSION pg_stat_statements", sessionsSchema); err != nil {
		return err
	}
	// After the schema, so the replica starts with it.
	if e.PostgresReplica, err = e.Postgres.NewReplica(ctx); err != nil {
		return err
	}
	certFile, keyFile, err := e.pki.serverFiles("session-cache.rust-security.svc")
	if err != nil {
		return err
	}
	tlsPort, err := testenv.FreePort()
	if err != nil {
		return err
	}
	e.RedisTLSAddr = "127.0.0.1:" + strconv.Itoa(tlsPort)
	// Only keys with a TTL are evicted (the cache's entries); a key without
	// one survives evictions and is removed only by a flush.
	if e.Redis, err = testenv.NewRedis(testenv.WithRedisArgs(
		"--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru",
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", e.pki.rootFile, "--tls-auth-clients", "no",
	)); err != nil {
		return err
	}
	e.goBackground(func() { sessionTraffic(e.bg, e.Postgres.DSN("postgres"), e.RedisClient(0)) })
	return nil
}

// startCluster starts the API server and prepares it (see setUpCluster);
// it returns the remediator's kubeconfig.
func (e *Env) startCluster(ctx context.Context) (kubeconfig string, err error) {
	e.say("starting kube-apiserver (etcd + kube-apiserver, a few seconds)")
	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime
	if e.Kube, err = testenv.NewKube(); err != nil {
		return "", err
	}
	return e.setUpCluster(ctx)
}

// startServices creates a Deployment for every simulated service, run by
// the kubelet stand-in, and for the datastores (not run: they exist for the
// policy's targets).
func (e *Env) startServices(ctx context.Context, authsim string, addr func() string) error {
	e.kubelet = newKubelet(e.Kube.Client, Namespace, e.tl)
	for _, name := range Services {
		a := addr()
		e.ServiceURLs[name] = "http://" + a
		args := []string{"--listen", a, "--log-file", e.authLog(name), "--instance-id", name, "--rate", "10"}
		if name == gatewayService {
			args = append(args, "--blocklist-file", e.blocklistFile())
		}
		w := &workload{
			name:      name,
			image:     "ghcr.io/rust-security/" + name + ":1.4.2",
			healthURL: "http://" + a + "/health",
			proc: binary(filepath.Join(e.dir, name+".stderr.log"), authsim,
				args...),
			afterStart: func(ctx context.Context) error { e.reapplySticky(name); return nil },
		}
		if err := e.kubelet.add(ctx, w); err != nil {
			return err
		}
		e.say("%s (simulator) at %s, log %s", name, e.ServiceURLs[name], e.authLog(name))
	}
	for _, name := range []string{"redis", "postgres"} {
		if err := e.kubelet.add(ctx, &workload{name: name, image: name}); err != nil {
			return err
		}
	}
	e.goBackground(func() { e.kubelet.run(e.bg) })
	return nil
}

// templateData are the values deploy/demo's templates are filled with.
func (e *Env) templateData() map[string]any {
	logs := make([]string, 0, len(Services))
	for _, s := range Services {
		logs = append(logs, e.authLog(s))
	}
	webhooks := make([]string, len(e.RemediatorURLs))
	for i, u := range e.RemediatorURLs {
		webhooks[i] = u + "/api/v1/alerts"
	}
	return map[string]any{
		"PostgresDSN":         verifyFull(e.Postgres.DSN("postgres"), e.pki.rootFile),
		"PostgresReplicaDSN":  verifyFull(e.PostgresReplica.DSN("postgres"), e.pki.rootFile),
		"PostgresAddr":        e.Postgres.Addr(),
		"PostgresReplicaAddr": e.PostgresReplica.Addr(),
		"RedisAddr":           e.Redis.Addr,
		"RedisTLSAddr":        e.RedisTLSAddr,
		"RootCAFile":          e.pki.rootFile,
		"CertsDir":            e.pki.pemDir,
		"Kubeconfig":          e.exporterKubeconfig,
		"Namespace":           Namespace,
		"AuthLogs":            logs,
		"Cooldown":            e.opts.Cooldown.String(),
		"VerifyWindow":        e.opts.verifyWindow().String(),
		"RecentRollout":       e.opts.recentRollout().String(),
		"RepeatInterval":      e.opts.RepeatInterval.String(),
		"RemediatorURLs":      webhooks,
		"TokenFile":           e.tokenFile,
		"PagerURL":            e.pagerURL,
		"GatewayReloadPort":   e.sec.gatewayPort,
	}
}

func (e *Env) startExporter(ctx context.Context, bin, addr string) error {
	e.ExporterURL = "http://" + addr
	config := filepath.Join(e.dir, "warden-exporter.yml")
	if err := e.render("warden-exporter.yml", config, e.templateData()); err != nil {
		return err
	}
	e.exporter = binary(filepath.Join(e.dir, "warden-exporter.log"), bin, "--config.file", config, "--web.listen-address", addr)
	if err := startHealthy(ctx, "warden-exporter", e.exporter, e.ExporterURL+"/-/ready"); err != nil {
		return err
	}
	e.say("warden-exporter at %s", e.ExporterURL)
	return nil
}

// prepareRemediators chooses the replicas' addresses and writes their
// webhook token, which Alertmanager's configuration names.
func (e *Env) prepareRemediators(addr func() string) error {
	e.token = "demo-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	e.tokenFile = filepath.Join(e.dir, "webhook-token")
	if err := os.WriteFile(e.tokenFile, []byte(e.token+"\n"), 0o600); err != nil {
		return err
	}
	for range remediatorReplicas {
		e.RemediatorURLs = append(e.RemediatorURLs, "http://"+addr())
	}
	return nil
}

// startRemediators starts the replicas at the addresses prepareRemediators
// chose, with the demo policy, the webhook token and the least-privilege
// kubeconfig, reading alert state from the demo's Alertmanager, and
// follows their decisions.
func (e *Env) startRemediators(ctx context.Context, bin, kubeconfig string) error {
	policy := e.PolicyFile()
	if err := e.render("policy.yml", policy, e.templateData()); err != nil {
		return err
	}
	passwordFile, err := e.writeStatusPassword()
	if err != nil {
		return err
	}
	for i, u := range e.RemediatorURLs {
		a := strings.TrimPrefix(u, "http://")
		id := fmt.Sprintf("warden-remediator-%d", i)
		logPath := filepath.Join(e.dir, id+".log")
		p := binary(logPath, bin,
			"--config.file", policy, "--web.bearer-token-file", e.tokenFile, "--kubeconfig", kubeconfig,
			"--web.basic-auth.username", StatusUser, "--web.basic-auth.password-file", passwordFile,
			"--alertmanager.url", e.Alertmanager.URL,
			"--identity", id, "--web.listen-address", a, "--log.format", "json")
		e.remediator = append(e.remediator, p)
		if err := startHealthy(ctx, id, p, u+"/-/ready"); err != nil {
			return err
		}
		e.goBackground(func() { followDecisions(e.bg, id, logPath, e.decisions, e.tl) })
	}
	e.say("warden-remediator replicas at %s", strings.Join(e.RemediatorURLs, ", "))
	return nil
}

// startAlertmanager starts the pager stand-in and Alertmanager, which
// delivers to every remediator replica and to the pager.
func (e *Env) startAlertmanager(ctx context.Context, pagerAddr string) error {
	pagerLn, err := net.Listen("tcp", pagerAddr)
	if err != nil {
		return fmt.Errorf("pager: %w", err)
	}
	e.pager = &pager{tl: e.tl}
	e.pagerSrv = &http.Server{Handler: e.pager, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.pagerSrv.Serve(pagerLn) }()
	e.pagerURL = "http://" + pagerLn.Addr().String() + "/"

	var config bytes.Buffer
	if err := e.renderTo("alertmanager.yml", &config, e.templateData()); err != nil {
		return err
	}
	e.say("starting Alertmanager")
	e.Alertmanager, err = testenv.NewAlertmanager(ctx, config.Bytes())
	return err
}

// startPrometheus starts Prometheus with rules/ compressed in time,
// scraping every service the way Kubernetes service discovery would label
// it, and alerting to the demo's Alertmanager.
func (e *Env) startPrometheus(ctx context.Context) error {
	rulesDir := filepath.Join(e.dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		return err
	}
	srcRules, _ := filepath.Glob(filepath.Join(e.root, "rules", "*.rules.yml"))
	sort.Strings(srcRules)
	rules, err := compressRules(srcRules, rulesDir, e.opts.TimeFactor, 5*time.Second, compressedDurationMetrics)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	e.say("starting Prometheus with %d rule files (time compressed %dx)", len(rules), e.opts.TimeFactor)
	nsLabel := map[string]string{"namespace": Namespace}
	hostPort := func(u string) string { return strings.TrimPrefix(u, "http://") }
	var jobs []testenv.ScrapeJob
	for _, s := range Services {
		jobs = append(jobs, testenv.ScrapeJob{Name: s, Targets: []string{hostPort(e.ServiceURLs[s])}, Labels: nsLabel})
	}
	jobs = append(jobs, testenv.ScrapeJob{Name: "warden-exporter", Targets: []string{hostPort(e.ExporterURL)}, Labels: nsLabel})
	remTargets := make([]string, len(e.RemediatorURLs))
	for i, u := range e.RemediatorURLs {
		remTargets[i] = hostPort(u)
	}
	jobs = append(jobs, testenv.ScrapeJob{Name: "warden-remediator", Targets: remTargets, Labels: nsLabel, HonorLabels: true})
	e.Prometheus, err = testenv.NewPrometheus(ctx, testenv.PrometheusConfig{
		Jobs:          jobs,
		RuleFiles:     rules,
		Alertmanagers: []string{e.Alertmanager.Addr},
	})
	if err != nil {
		return err
	}
	if _, err := e.Prometheus.RuleGroups(ctx); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	return nil
}

func (e *Env) goBackground(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

func (e *Env) authLog(service string) string {
	return filepath.Join(e.dir, service+".log")
}

// URLs lists what a person can look at while the demo runs.
func (e *Env) URLs() [][2]string {
	out := [][2]string{
		{"Prometheus", e.Prometheus.URL + "/api/v1/alerts"},
		{"Alertmanager", e.Alertmanager.URL + "/api/v2/alerts"},
		{"warden-exporter", e.ExporterURL + "/metrics"},
	}
	for i, u := range e.RemediatorURLs {
		out = append(out, [2]string{fmt.Sprintf("warden-remediator-%d", i), u + "/metrics"})
	}
	for i := range e.RemediatorURLs {
		out = append(out, [2]string{fmt.Sprintf("status page %d", i), e.StatusPageURL(i, true)})
	}
	for _, s := range Services {
		out = append(out, [2]string{s, e.ServiceURLs[s] + "/metrics"})
	}
	out = append(out,
		[2]string{"kube-apiserver", e.Kube.Config.Host},
		[2]string{"Redis", e.Redis.Addr + " (TLS: " + e.RedisTLSAddr + ")"},
		[2]string{"PostgreSQL", e.Postgres.Addr() + " (replica: " + e.PostgresReplica.Addr() + ")"},
		[2]string{"logs and configs", e.dir},
	)
	return out
}

// Stop ends every process the demo started and removes its files.
func (e *Env) Stop() {
	// Background loops first, so the kubelet stand-in cannot start a
	// process after it was stopped.
	e.cancel()
	e.wg.Wait()
	if e.Prometheus != nil {
		e.Prometheus.Stop()
	}
	if e.Alertmanager != nil {
		e.Alertmanager.Stop()
	}
	if e.pagerSrv != nil {
		_ = e.pagerSrv.Close()
	}
	for _, p := range e.remediator {
		stopBinary(p)
	}
	if e.exporter != nil {
		stopBinary(e.exporter)
	}
	if e.kubelet != nil {
		e.kubelet.mu.Lock()
		for _, w := range e.kubelet.workloads {
			if w.proc != nil {
				stopBinary(w.proc)
			}
		}
		e.kubelet.mu.Unlock()
	}
	if e.Kube != nil {
		e.Kube.Stop()
	}
	if e.Redis != nil {
		e.Redis.Stop()
	}
	if e.PostgresReplica != nil {
		e.PostgresReplica.Stop()
	}
	if e.Postgres != nil {
		e.Postgres.Stop()
	}
	os.RemoveAll(e.dir)
}

// setUpCluster creates the namespace, auth-service's TLS Secret and the
// exporter's and the remediator's RBAC from deploy/, and writes a
// kubeconfig for each that the API server authorizes exactly as its
// ServiceAccount: the demo runs them with the least privilege they ship
// with. It returns the remediator's kubeconfig.
func (e *Env) setUpCluster(ctx context.Context) (string, error) {
	c := e.Kube.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create namespace: %w", err)
	}
	if _, err := c.CoreV1().ServiceAccounts(Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create default service account: %w", err)
	}
	if err := e.createTLSSecret(ctx); err != nil {
		return "", err
	}
	var err error
	if e.exporterKubeconfig, err = e.serviceAccountKubeconfig(ctx, "warden-exporter", "deploy/exporter/serviceaccount.yaml", "deploy/exporter/rbac.yaml"); err != nil {
		return "", err
	}
	return e.serviceAccountKubeconfig(ctx, "warden-remediator", "deploy/remediator/rbac.yaml")
}

// serviceAccountKubeconfig creates the ServiceAccount, Roles and
// RoleBindings of the given manifests (paths from the module root) in the
// demo's namespace, and writes <name>.kubeconfig for a user the API server
// authorizes as that ServiceAccount (the manifests must hold exactly one).
func (e *Env) serviceAccountKubeconfig(ctx context.Context, name string, manifests ...string) (string, error) {
	var sa string
	for _, m := range manifests {
		err := e.createManifest(ctx, m, func(o *corev1.ServiceAccount) error {
			if sa != "" {
				return fmt.Errorf("a second ServiceAccount %s (after %s)", o.Name, sa)
			}
			sa = o.Name
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	if sa == "" {
		return "", fmt.Errorf("%s: no ServiceAccount", strings.Join(manifests, ", "))
	}
	cfg, err := e.Kube.AddUser("system:serviceaccount:" + Namespace + ":" + sa)
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.dir, name+".kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, path, Namespace); err != nil {
		return "", err
	}
	return path, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// render fills deploy/demo/<name> into path.
func (e *Env) render(name, path string, data any) error {
	var b bytes.Buffer
	if err := e.renderTo(name, &b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func (e *Env) renderTo(name string, w io.Writer, data any) error {
	return RenderConfig(filepath.Join(e.root, "deploy", "demo", name), w, data)
}

// RenderConfig fills one of deploy/demo's templates ([[ ]] delimiters).
func RenderConfig(path string, w io.Writer, data any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	t, err := template.New(filepath.Base(path)).Delims("[[", "]]").Option("missingkey=error").Parse(string(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := t.Execute(w, data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// verifyFull turns a testenv DSN (sslmode=disable) into one that insists
// on TLS and verifies the server's certificate against rootFile.
func verifyFull(dsn, rootFile string) string {
	return strings.Replace(dsn, "sslmode=disable", "sslmode=verify-full&sslrootcert="+url.QueryEscape(rootFile), 1)
}

func freePorts(n int) ([]int, error) {
	// Hold all listeners until every port is chosen, so none repeats.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// SetFault switches a simulator's faults (authsim's POST /admin/fault).
func (e *Env) SetFault(ctx context.Context, service string, fault any) error {
	body, err := json.Marshal(fault)
	if err != nil {
		return err
	}
	return e.postService(ctx, service, "/admin/fault", body)
}

// ResetFaults clears a simulator's faults.
func (e *Env) ResetFaults(ctx context.Context, service string) error {
	return e.postService(ctx, service, "/admin/reset", nil)
}

func (e *Env) postService(ctx context.Context, service, path string, body []byte) error {
	base, ok := e.ServiceURLs[service]
	if !ok {
		return fmt.Errorf("unknown service %q", service)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", service, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %s: %s", service, path, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// setSticky makes a fault come back StickyDelay after every restart of the
// service (a broken dependency a restart does not fix); empty clears it.
func (e *Env) setSticky(service, faultJSON string) {
	e.stickyMu.Lock()
	defer e.stickyMu.Unlock()
	if faultJSON == "" {
		delete(e.sticky, service)
		return
	}
	e.sticky[service] = faultJSON
}

func (e *Env) reapplySticky(service string) {
	e.stickyMu.Lock()
	fault, ok := e.sticky[service]
	e.stickyMu.Unlock()
	if !ok {
		return
	}
	time.AfterFunc(e.opts.StickyDelay, func() {
		e.stickyMu.Lock()
		still := e.sticky[service] == fault
		e.stickyMu.Unlock()
		if !still {
			return
		}
		// Come back only once the alert of the previous round has
		// resolved, so that a slow machine still sees a new occurrence
		// (a refire) rather than one long alert.
		ctx, cancel := context.WithTimeout(e.bg, time.Minute)
		defer cancel()
		if e.Prometheus != nil {
			_ = e.Prometheus.WaitForAlertGone(ctx, alertHighErrorRate, map[string]string{"job": service})
		}
		if err := e.postService(ctx, service, "/admin/fault", []byte(fault)); err == nil {
			e.tl.Printf("FAULT", "%s: the fault is back after the restart (a restart does not fix it)", service)
		}
	})
}

// Decisions returns the remediator decisions so far that match keep (nil:
// all).
func (e *Env) Decisions(keep func(Decision) bool) []Decision { return e.decisions.list(keep) }

// Restarts is how many rollout restarts of a Deployment the kubelet
// stand-in carried out.
func (e *Env) Restarts(deployment string) int { return e.kubelet.Restarts(deployment) }

// Pages returns the notifications the demo's pager received.
func (e *Env) Pages() []Page { return e.pager.list() }

// RedisClient opens a client on one database of the demo's Redis.
func (e *Env) RedisClient(db int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: e.Redis.Addr, DB: db})
}

// Page is one alert as delivered to the pager.
type Page struct {
	Status      string
	Labels      map[string]string
	StartsAt    time.Time
	Fingerprint string
}

// pager is the demo's stand-in for a paging service: it prints every new
// firing or resolved notification of an alert occurrence once.
type pager struct {
	tl    *Timeline
	mu    sync.Mutex
	pages []Page
	seen  map[string]bool
}

func (p *pager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Alerts []struct {
			Status      string            `json:"status"`
			Labels      map[string]string `json:"labels"`
			StartsAt    time.Time         `json:"startsAt"`
			Fingerprint string            `json:"fingerprint"`
		} `json:"alerts"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	for _, a := range msg.Alerts {
		key := a.Fingerprint + a.StartsAt.String() + a.Status
		if p.seen[key] {
			continue
		}
		p.seen[key] = true
		p.pages = append(p.pages, Page{Status: a.Status, Labels: a.Labels, StartsAt: a.StartsAt, Fingerprint: a.Fingerprint})
		if a.Status == "firing" {
			p.tl.Printf("PAGE", "on-call paged (%s): %s", a.Labels["severity"], alertKey(a.Labels))
		}
	}
}

func (p *pager) list() []Page {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Page(nil), p.pages...)
}
