// Package demo runs warden's whole loop on loopback, for `make demo` and
// the end-to-end test: PostgreSQL, Redis, two auth-service simulators,
// warden-exporter, Prometheus with the rules, Alertmanager, two
// warden-remediator replicas and a kube-apiserver with a stand-in kubelet,
// and plays a scripted scenario against it (see Steps).
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
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

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

	Postgres     *testenv.Postgres
	Redis        *testenv.Redis
	Kube         *testenv.Kube
	Prometheus   *testenv.Prometheus
	Alertmanager *testenv.Alertmanager

	// ServiceURLs are the simulators' base URLs by Deployment name.
	ServiceURLs map[string]string
	// ExporterURL and RemediatorURLs are the warden processes' base URLs.
	ExporterURL    string
	RemediatorURLs []string
	token          string

	kubelet    *kubelet
	exporter   *process
	remediator []*process
	decisions  *decisionLog
	pager      *pager
	pagerSrv   *http.Server

	stickyMu sync.Mutex
	sticky   map[string]string // service -> fault JSON re-applied after every restart

	bg     context.Context // ends with Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start brings the whole loop up. On error everything already started is
// stopped again.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	if opts.Timeline == nil {
		opts.Timeline = NewTimeline(io.Discard)
	}
	if opts.TimeFactor == 0 {
		opts.TimeFactor = 30
	}
	if opts.RepeatInterval == 0 {
		opts.RepeatInterval = 10 * time.Second
	}
	if opts.Cooldown == 0 {
		opts.Cooldown = 45 * time.Second
	}
	if opts.StickyDelay == 0 {
		opts.StickyDelay = 20 * time.Second
	}
	tl := opts.Timeline
	say := func(format string, args ...any) { tl.Printf("SETUP", format, args...) }

	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "warden-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo temp dir: %w", err)
	}
	e := &Env{opts: opts, tl: tl, dir: dir, root: root, ServiceURLs: map[string]string{}, decisions: &decisionLog{}, sticky: map[string]string{}}
	bg, cancel := context.WithCancel(context.Background())
	e.bg, e.cancel = bg, cancel
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()

	bins, err := buildBinaries(ctx, root, filepath.Join(dir, "bin"), say, "authsim", "warden-exporter", "warden-remediator")
	if err != nil {
		return nil, err
	}

	say("starting PostgreSQL and Redis")
	if e.Postgres, err = testenv.NewPostgres(); err != nil {
		return nil, err
	}
	// Only keys with a TTL are evicted (the cache's entries); a key without
	// one survives evictions and is removed only by a flush.
	if e.Redis, err = testenv.NewRedis(testenv.WithRedisArgs("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")); err != nil {
		return nil, err
	}

	say("starting kube-apiserver (etcd + kube-apiserver, a few seconds)")
	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime
	if e.Kube, err = testenv.NewKube(); err != nil {
		return nil, err
	}
	kubeconfig, err := e.setUpCluster(ctx)
	if err != nil {
		return nil, err
	}

	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	e.kubelet = newKubelet(e.Kube.Client, Namespace, tl)
	for i, name := range Services {
		name := name
		addr := "127.0.0.1:" + strconv.Itoa(ports[i])
		e.ServiceURLs[name] = "http://" + addr
		w := &workload{
			name:      name,
			image:     "ghcr.io/rust-security/" + name + ":1.4.2",
			healthURL: "http://" + addr + "/health",
			proc: newProcess(name, bins["authsim"], filepath.Join(dir, name+".stderr.log"),
				"--listen", addr, "--log-file", e.authLog(name), "--instance-id", name, "--rate", "10"),
			afterStart: func(ctx context.Context) error { e.reapplySticky(name); return nil },
		}
		if err := e.kubelet.add(ctx, w); err != nil {
			return nil, err
		}
		say("%s (simulator) at %s, log %s", name, e.ServiceURLs[name], e.authLog(name))
	}
	for _, name := range []string{"redis", "postgres"} {
		if err := e.kubelet.add(ctx, &workload{name: name, image: name}); err != nil {
			return nil, err
		}
	}
	e.goBackground(func() { e.kubelet.run(bg) })

	tmplData := map[string]any{
		"PostgresDSN":    e.Postgres.DSN("postgres"),
		"RedisAddr":      e.Redis.Addr,
		"AuthLogs":       []string{e.authLog("auth-service"), e.authLog("policy-service")},
		"Cooldown":       opts.Cooldown.String(),
		"RepeatInterval": opts.RepeatInterval.String(),
	}

	exporterAddr := "127.0.0.1:" + strconv.Itoa(ports[2])
	e.ExporterURL = "http://" + exporterAddr
	exporterConfig := filepath.Join(dir, "warden-exporter.yml")
	if err := e.render("warden-exporter.yml", exporterConfig, tmplData); err != nil {
		return nil, err
	}
	e.exporter = newProcess("warden-exporter", bins["warden-exporter"], filepath.Join(dir, "warden-exporter.log"),
		"--config.file", exporterConfig, "--web.listen-address", exporterAddr)
	if err := e.exporter.start(ctx, e.ExporterURL+"/-/ready"); err != nil {
		return nil, err
	}
	say("warden-exporter at %s", e.ExporterURL)

	policy := filepath.Join(dir, "policy.yml")
	if err := e.render("policy.yml", policy, tmplData); err != nil {
		return nil, err
	}
	e.token = "demo-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tokenFile := filepath.Join(dir, "webhook-token")
	if err := os.WriteFile(tokenFile, []byte(e.token+"\n"), 0o600); err != nil {
		return nil, err
	}
	for i := 0; i < 2; i++ {
		addr := "127.0.0.1:" + strconv.Itoa(ports[3+i])
		id := fmt.Sprintf("warden-remediator-%d", i)
		logPath := filepath.Join(dir, id+".log")
		p := newProcess(id, bins["warden-remediator"], logPath,
			"--config.file", policy, "--web.bearer-token-file", tokenFile, "--kubeconfig", kubeconfig,
			"--identity", id, "--web.listen-address", addr, "--log.format", "json")
		if err := p.start(ctx, "http://"+addr+"/-/ready"); err != nil {
			return nil, err
		}
		e.remediator = append(e.remediator, p)
		e.RemediatorURLs = append(e.RemediatorURLs, "http://"+addr)
		e.goBackground(func() { followDecisions(bg, id, logPath, e.decisions, tl) })
	}
	say("warden-remediator replicas at %s", strings.Join(e.RemediatorURLs, ", "))

	pagerLn, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[5]))
	if err != nil {
		return nil, fmt.Errorf("pager: %w", err)
	}
	e.pager = &pager{tl: tl}
	e.pagerSrv = &http.Server{Handler: e.pager, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.pagerSrv.Serve(pagerLn) }()

	webhooks := make([]string, len(e.RemediatorURLs))
	for i, u := range e.RemediatorURLs {
		webhooks[i] = u + "/api/v1/alerts"
	}
	tmplData["RemediatorURLs"] = webhooks
	tmplData["TokenFile"] = tokenFile
	tmplData["PagerURL"] = "http://" + pagerLn.Addr().String() + "/"
	var amConfig bytes.Buffer
	if err := e.renderTo("alertmanager.yml", &amConfig, tmplData); err != nil {
		return nil, err
	}
	say("starting Alertmanager")
	if e.Alertmanager, err = testenv.NewAlertmanager(ctx, amConfig.Bytes()); err != nil {
		return nil, err
	}

	rulesDir := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		return nil, err
	}
	srcRules, _ := filepath.Glob(filepath.Join(root, "rules", "*.rules.yml"))
	sort.Strings(srcRules)
	rules, err := compressRules(srcRules, rulesDir, opts.TimeFactor, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	say("starting Prometheus with %d rule files (time compressed %dx)", len(rules), opts.TimeFactor)
	nsLabel := map[string]string{"namespace": Namespace}
	remTargets := make([]string, len(e.RemediatorURLs))
	for i, u := range e.RemediatorURLs {
		remTargets[i] = strings.TrimPrefix(u, "http://")
	}
	e.Prometheus, err = testenv.NewPrometheus(ctx, testenv.PrometheusConfig{
		Jobs: []testenv.ScrapeJob{
			{Name: "auth-service", Targets: []string{strings.TrimPrefix(e.ServiceURLs["auth-service"], "http://")}, Labels: nsLabel},
			{Name: "policy-service", Targets: []string{strings.TrimPrefix(e.ServiceURLs["policy-service"], "http://")}, Labels: nsLabel},
			{Name: "warden-exporter", Targets: []string{exporterAddr}, Labels: nsLabel},
			{Name: "warden-remediator", Targets: remTargets, Labels: nsLabel, HonorLabels: true},
		},
		RuleFiles:     rules,
		Alertmanagers: []string{e.Alertmanager.Addr},
	})
	if err != nil {
		return nil, err
	}
	if _, err := e.Prometheus.RuleGroups(ctx); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	e.goBackground(func() { watchAlerts(bg, e.Prometheus, tl) })
	return e, nil
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
	for _, s := range Services {
		out = append(out, [2]string{s, e.ServiceURLs[s] + "/metrics"})
	}
	out = append(out,
		[2]string{"kube-apiserver", e.Kube.Config.Host},
		[2]string{"Redis", e.Redis.Addr},
		[2]string{"PostgreSQL", e.Postgres.Addr()},
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
		p.stop()
	}
	if e.exporter != nil {
		e.exporter.stop()
	}
	if e.kubelet != nil {
		e.kubelet.mu.Lock()
		for _, w := range e.kubelet.workloads {
			if w.proc != nil {
				w.proc.stop()
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
	if e.Postgres != nil {
		e.Postgres.Stop()
	}
	os.RemoveAll(e.dir)
}

// setUpCluster creates the namespace and the remediator's RBAC from
// deploy/remediator/rbac.yaml, and returns a kubeconfig for a user the API
// server authorizes exactly as that ServiceAccount: the demo runs the
// remediator with the least privilege it ships with.
func (e *Env) setUpCluster(ctx context.Context) (string, error) {
	c := e.Kube.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create namespace: %w", err)
	}
	if _, err := c.CoreV1().ServiceAccounts(Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create default service account: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(e.root, "deploy", "remediator", "rbac.yaml"))
	if err != nil {
		return "", err
	}
	var sa string
	for _, doc := range strings.Split(string(raw), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return "", fmt.Errorf("deploy/remediator/rbac.yaml: %w", err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			sa = o.Name
			_, err = c.CoreV1().ServiceAccounts(Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = c.RbacV1().Roles(Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = c.RbacV1().RoleBindings(Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("unexpected %T", obj)
		}
		if err != nil {
			return "", fmt.Errorf("deploy/remediator/rbac.yaml: %w", err)
		}
	}
	if sa == "" {
		return "", errors.New("deploy/remediator/rbac.yaml has no ServiceAccount")
	}
	cfg, err := e.Kube.AddUser("system:serviceaccount:" + Namespace + ":" + sa)
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.dir, "remediator.kubeconfig")
	if err := writeKubeconfig(cfg, path); err != nil {
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

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["demo"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["remediator"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["demo"] = &clientcmdapi.Context{Cluster: "demo", AuthInfo: "remediator", Namespace: Namespace}
	kc.CurrentContext = "demo"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
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
