// Command warden-remediator receives Alertmanager webhooks and performs
// Level-1 fixes (restart, scale, recycle, flush-cache, reload) under a
// policy, at most once per alert occurrence and target.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/kubecore"
	"github.com/warden-sre/warden/internal/redislog"
	"github.com/warden-sre/warden/internal/reload"
	"github.com/warden-sre/warden/internal/secret"
	"github.com/warden-sre/warden/internal/selfmetrics"
	"github.com/warden-sre/warden/remediator"
	"github.com/warden-sre/warden/remediator/actions"
)

// defaultListenAddress: the exporter port range 9100-9999 is allocated;
// warden uses 10187 for the exporter and 10188 for the remediator, which no
// well-known exporter uses (docs/configuration.md).
const defaultListenAddress = ":10188"

func main() { os.Exit(run()) }

func run() int {
	if isApprovalCommand(os.Args[1:]) {
		return runApprovalCommand(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	}
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(f.log)
	if f.command == simulateCommand {
		return runSimulate(f, os.Stdout, logger)
	}
	// go-redis reports failed dials on its own; the flush's outcome says so.
	redislog.Install(logger)

	policy, auth, ok := f.loadConfig(logger)
	if !ok {
		return 1
	}
	approvers, firstApprovers, err := f.approvalTokens(logger)
	if err != nil {
		logger.Error("approvals endpoint", "err", err)
		return 1
	}
	if f.configCheck {
		fmt.Printf("%s: %d rules, %d redis targets, mode %s: OK\n", f.configFile, len(policy.Rules), len(policy.Redis), policy.Mode)
		return 0
	}
	if auth.Disabled {
		logger.Warn("webhook authentication is DISABLED (--no-auth): anyone who can reach the listen address can trigger remediation")
	}
	if f.dryRun || policy.DryRun {
		logger.Warn("dry-run: decisions are recorded, nothing is changed")
	}

	kubeConfig, err := kubecore.RESTConfig(kubecore.Options{
		Kubeconfig: f.kubeconfig,
		UserAgent:  "warden-remediator",
		// Refusals (gates, duplicate, cooldown, breaker) are decided from
		// informer caches and cost no request. A claim costs about five:
		// the gates' confirming reads of the namespace and the Deployment,
		// two Lease writes and verification's first read, plus the
		// action's own reads and writes. The burst takes the claims of a
		// storm on 200 targets at once; 200 QPS sustains about 30 claims/s
		// after it, and the API server's priority and fairness protects it
		// beyond that. client-go's default of 5 QPS would turn a storm
		// into a backlog.
		QPS:   200,
		Burst: 1000,
	})
	if err != nil {
		logger.Error("kubernetes client", "err", err)
		return 1
	}
	kube, err := kubernetes.NewForConfig(kubeConfig)
	if err != nil {
		logger.Error("kubernetes client", "err", err)
		return 1
	}
	// Events (one per action, one per target and refusal reason per
	// window) have a request budget of their own (on the configuration
	// read above), so that they never delay a claim; client-go's
	// broadcaster writes them in the background.
	eventConfig := rest.CopyConfig(kubeConfig)
	eventConfig.QPS, eventConfig.Burst = 50, 300
	eventKube, err := kubernetes.NewForConfig(eventConfig)
	if err != nil {
		logger.Error("kubernetes client for events", "err", err)
		return 1
	}
	id := f.replicaIdentity()
	am, prom, err := f.alertReaders()
	if err != nil {
		logger.Error("alert sources", "err", err)
		return 1
	}
	if am == nil && prom == nil {
		logger.Warn("neither --alertmanager.url nor --prometheus.url is set: late jobs are dropped as stale, block_when refuses, and outcomes rest on resolved notifications alone")
	}
	coordNS := f.coordNamespace
	if coordNS == "" {
		coordNS = os.Getenv("POD_NAMESPACE")
	}
	if coordNS == "" {
		logger.Warn("no --coordination.namespace (or $POD_NAMESPACE): the rate limit is counted per replica")
	}
	reg := selfmetrics.NewRegistry("warden_remediator")
	rem, err := remediator.New(remediator.Options{
		Kube:         kube,
		EventKube:    eventKube,
		Executor:     actions.NewExecutor(kube, logger.With("component", "actions"), actions.WithIdentity(id)),
		Logger:       logger.With("component", "remediator"),
		Registerer:   reg,
		Identity:     id,
		QueueSize:    f.queueSize,
		Workers:      f.workers,
		DryRun:       f.dryRun,
		Auth:         auth,
		MaxBodyBytes: f.maxBody,

		Alertmanager:          am,
		Prometheus:            prom,
		CoordinationNamespace: coordNS,
	}, policy)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	if approvers != nil {
		approvers.set = rem.SetApprovalTokens
		approvers.apply(firstApprovers)
	} else {
		logger.Info("approvals endpoint off: /api/v1/approvals answers 404", "reason", "no --web.approvals-tokens-file")
	}
	reloader := f.newReloader(rem, approvers, logger)
	reg.MustRegister(reloader)
	reloader.Loaded()

	server := &http.Server{
		Handler:           newMux(rem, reg, reloader, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	logger.Info("starting warden-remediator", "version", version.Info(), "identity", id,
		"listen", strings.Join(*f.web.WebListenAddresses, ","), "rules", len(policy.Rules))
	return serve(f, rem, server, reloader, approvers, logger)
}

// flags are the command line.
type flags struct {
	configFile    string
	configCheck   bool
	tokenFile     string
	basicUser     string
	basicPassFile string
	approvalsFile string
	noAuth        bool
	maxBody       int64
	queueSize     int
	workers       int
	kubeconfig    string
	dryRun        bool
	identity      string
	gracePeriod   time.Duration
	web           *web.FlagConfig
	log           *promslog.Config

	// approvalsRefresh: how often the tokens file is re-read.
	approvalsRefresh time.Duration

	alertmanagerURL, alertmanagerHTTP string
	prometheusURL, prometheusHTTP     string
	coordNamespace                    string

	// command is the subcommand: serve (the default) or simulate.
	command  string
	simulate simulateFlags
}

func parseFlags(args []string) (*flags, error) {
	app := kingpin.New("warden-remediator", "Receives Alertmanager webhooks and performs safe Level-1 fixes, at most once per alert occurrence and target.")
	f := &flags{log: &promslog.Config{}}
	app.Flag("config.file", "Remediation policy (YAML).").Default("remediator.yml").StringVar(&f.configFile)
	app.Flag("config.check", "Validate the policy and the web configuration, then exit.").BoolVar(&f.configCheck)
	app.Flag("web.bearer-token-file", "File with the bearer token Alertmanager sends (http_config.authorization.credentials_file).").StringVar(&f.tokenFile)
	app.Flag("web.basic-auth.username", "Username for basic auth: what Alertmanager sends, and what a browser sends for the status page at /.").StringVar(&f.basicUser)
	app.Flag("web.basic-auth.password-file", "File with the basic-auth password.").StringVar(&f.basicPassFile)
	app.Flag("web.approvals-tokens-file", "File of name:token lines: the people who may approve or deny through /api/v1/approvals (their own credentials, not the webhook's). Re-read on reload and every --web.approvals-tokens-refresh-interval. Without it, or while the file is missing or has no name:token line, the endpoint is off (404); a malformed file stops the start.").StringVar(&f.approvalsFile)
	app.Flag("web.approvals-tokens-refresh-interval", "How often --web.approvals-tokens-file is re-read (a mounted Secret changes in place); 0 re-reads it on reload only.").Default("30s").DurationVar(&f.approvalsRefresh)
	app.Flag("no-auth", "Accept webhook requests without any authentication (testing only; logs a warning).").BoolVar(&f.noAuth)
	app.Flag("web.max-body-bytes", "Largest webhook body accepted (larger: 413).").Default("1048576").Int64Var(&f.maxBody)
	app.Flag("queue.size", "Alerts accepted but not yet handled; when full, or while queued alerts wait more than half of the policy's defaults.max_delay, the webhook answers 503 so Alertmanager retries.").Default("10000").IntVar(&f.queueSize)
	app.Flag("queue.workers", "Alerts handled concurrently (most of a worker's time is waiting for the API server).").Default("16").IntVar(&f.workers)
	app.Flag("kubeconfig", "Kubeconfig file; empty means in-cluster configuration.").Default("").StringVar(&f.kubeconfig)
	app.Flag("dry-run", "Evaluate and record every decision, change nothing (overrides the policy).").BoolVar(&f.dryRun)
	app.Flag("identity", "Name of this replica in Leases and Events (default: $POD_NAME, else the host name).").Default("").StringVar(&f.identity)
	app.Flag("shutdown.grace-period", "On SIGTERM, time to finish queued alerts before exiting.").Default("30s").DurationVar(&f.gracePeriod)
	app.Flag("alertmanager.url", "Alertmanager to read firing alerts from (API v2): stale check, block_when, verification.").Default("").StringVar(&f.alertmanagerURL)
	app.Flag("alertmanager.http-config-file", "HTTP client configuration (TLS, authorization) for --alertmanager.url, in Prometheus's http_config format.").Default("").StringVar(&f.alertmanagerHTTP)
	app.Flag("prometheus.url", "Prometheus to read ALERTS from: verification, and the gates when --alertmanager.url is not set.").Default("").StringVar(&f.prometheusURL)
	app.Flag("prometheus.http-config-file", "HTTP client configuration (TLS, authorization) for --prometheus.url, in Prometheus's http_config format.").Default("").StringVar(&f.prometheusHTTP)
	app.Flag("coordination.namespace", "Namespace of the Lease that holds the rate limit of all replicas (default: $POD_NAMESPACE).").Default("").StringVar(&f.coordNamespace)
	f.web = kingpinflag.AddFlags(app, defaultListenAddress)
	promslogflag.AddFlags(app, f.log)
	app.Version(version.Print("warden-remediator"))
	app.HelpFlag.Short('h')
	// Without a subcommand the binary serves, as it always did.
	app.Command("serve", "Receive webhooks and act (the default).").Default()
	f.simulate.addCommand(app)
	cmd, err := app.Parse(args)
	if err != nil {
		return nil, err
	}
	f.command = cmd
	return f, nil
}

// loadConfig reads the policy, the webhook credentials and the web
// configuration, logging what is wrong. --config.check validates the
// policy alone; credentials are checked when given.
func (f *flags) loadConfig(logger *slog.Logger) (*remediator.Policy, remediator.Auth, bool) {
	policy, err := remediator.LoadPolicy(f.configFile)
	if err != nil {
		logger.Error("cannot load policy", "file", f.configFile, "err", err)
		return nil, remediator.Auth{}, false
	}
	auth, err := f.loadAuth(!f.configCheck)
	if err != nil {
		logger.Error("invalid authentication settings", "err", err)
		return nil, remediator.Auth{}, false
	}
	if *f.web.WebConfigFile != "" {
		if err := web.Validate(*f.web.WebConfigFile); err != nil {
			logger.Error("invalid web configuration", "file", *f.web.WebConfigFile, "err", err)
			return nil, remediator.Auth{}, false
		}
	}
	return policy, auth, true
}

// loadAuth reads the webhook credentials from their files. With
// requireAuth, having none is an error unless --no-auth is given.
func (f *flags) loadAuth(requireAuth bool) (remediator.Auth, error) {
	a := remediator.Auth{Username: f.basicUser, Disabled: f.noAuth}
	if f.tokenFile != "" {
		t, err := secret.ReadFile(f.tokenFile)
		if err != nil {
			return a, fmt.Errorf("--web.bearer-token-file: %w", err)
		}
		a.BearerToken = t
	}
	switch {
	case f.basicUser != "" && f.basicPassFile == "":
		return a, errors.New("--web.basic-auth.username needs --web.basic-auth.password-file")
	case f.basicUser == "" && f.basicPassFile != "":
		return a, errors.New("--web.basic-auth.password-file needs --web.basic-auth.username")
	case f.basicUser != "":
		p, err := secret.ReadFile(f.basicPassFile)
		if err != nil {
			return a, fmt.Errorf("--web.basic-auth.password-file: %w", err)
		}
		a.Password = p
	}
	if requireAuth && !a.Configured() && !a.Disabled {
		return a, errors.New("no webhook authentication configured: set --web.bearer-token-file and/or --web.basic-auth.username with --web.basic-auth.password-file (or --no-auth to accept anyone)")
	}
	return a, nil
}

// approvalTokens reads --web.approvals-tokens-file once before start: it
// returns nil when the flag is not set, and an error when the file is
// malformed or unreadable (a missing file turns the endpoint off).
func (f *flags) approvalTokens(logger *slog.Logger) (*approvalTokensFile, approvalTokensRead, error) {
	if f.approvalsFile == "" {
		return nil, approvalTokensRead{}, nil
	}
	if f.approvalsRefresh < 0 {
		return nil, approvalTokensRead{}, errors.New("--web.approvals-tokens-refresh-interval: must not be negative")
	}
	a := &approvalTokensFile{path: f.approvalsFile, logger: logger.With("component", "approvals")}
	r, err := a.read()
	if err != nil {
		return nil, approvalTokensRead{}, err
	}
	return a, r, nil
}

// alertReaders builds the clients of Alertmanager and Prometheus; either is
// nil when its URL is not set.
func (f *flags) alertReaders() (remediator.AlertReader, remediator.AlertReader, error) {
	var am, prom remediator.AlertReader
	if f.alertmanagerURL != "" {
		c, err := httpClient("alertmanager", f.alertmanagerURL, f.alertmanagerHTTP)
		if err != nil {
			return nil, nil, err
		}
		am = &remediator.AlertmanagerReader{URL: f.alertmanagerURL, Client: c}
	}
	if f.prometheusURL != "" {
		c, err := httpClient("prometheus", f.prometheusURL, f.prometheusHTTP)
		if err != nil {
			return nil, nil, err
		}
		prom = &remediator.PrometheusReader{URL: f.prometheusURL, Client: c}
	}
	return am, prom, nil
}

// httpClient is the client of --<name>.url, configured by
// --<name>.http-config-file (Prometheus's http_config format).
func httpClient(name, u, file string) (*http.Client, error) {
	cfg := config.DefaultHTTPClientConfig
	if file != "" {
		c, _, err := config.LoadHTTPConfigFile(file)
		if err != nil {
			return nil, fmt.Errorf("--%s.http-config-file: %w", name, err)
		}
		cfg = *c
	}
	if _, err := url.Parse(u); err != nil {
		return nil, fmt.Errorf("--%s.url: %w", name, err)
	}
	return config.NewClientFromConfig(cfg, "warden-remediator-"+name)
}

// replicaIdentity names this replica: --identity, else $POD_NAME, else
// the host name.
func (f *flags) replicaIdentity() string {
	if f.identity != "" {
		return f.identity
	}
	if id := os.Getenv("POD_NAME"); id != "" {
		return id
	}
	id, _ := os.Hostname()
	return id
}

// newReloader re-reads the policy and the credential files on SIGHUP and
// POST /-/reload; a failed reload keeps what is in force.
func (f *flags) newReloader(rem *remediator.Remediator, approvers *approvalTokensFile, logger *slog.Logger) *reload.Reloader {
	return reload.New(reload.Options{
		Namespace:      "warden_remediator",
		Subject:        "policy",
		SuccessfulHelp: "1 if the last policy (re)load succeeded, 0 if it failed and the previous policy stays in force.",
		TimestampHelp:  "Unix time of the last successful policy (re)load.",
		ReasonInLog:    true,
	}, func() error {
		p, err := remediator.LoadPolicy(f.configFile)
		if err == nil {
			var a remediator.Auth
			var tokens approvalTokensRead
			if a, err = f.loadAuth(true); err == nil && approvers != nil {
				tokens, err = approvers.read()
			}
			if err == nil {
				rem.SetPolicy(p)
				rem.SetAuth(a)
				if approvers != nil {
					approvers.apply(tokens)
				}
				logger.Info("policy reloaded", "file", f.configFile, "rules", len(p.Rules))
				return nil
			}
		}
		logger.Error("reload failed, keeping the previous policy", "file", f.configFile, "err", err)
		return err
	})
}

func newMux(rem *remediator.Remediator, reg *prometheus.Registry, reloader *reload.Reloader, logger *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/api/v1/alerts", rem.WebhookHandler())
	mux.Handle("/webhook", rem.WebhookHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)}))
	// Approvals take their own credentials (--web.approvals-tokens-file).
	mux.Handle("/api/v1/approvals", rem.ApprovalsHandler())
	mux.Handle("/api/v1/approvals/", rem.ApprovalsHandler())
	mux.Handle("/-/healthy", rem.HealthHandler())
	mux.Handle("/-/ready", rem.ReadyHandler())
	// The reload endpoint takes the webhook's credentials, and a failure's
	// details (policy path, YAML error) stay in the log.
	mux.Handle("/-/reload", rem.Protect(reloader.Handler()))
	mux.Handle("/", rem.StatusHandler())
	return mux
}

// serve runs the workers and the web server until a signal or a server
// failure, then stops accepting alerts, finishes what was acknowledged
// within the grace period, and returns the exit code.
func serve(f *flags, rem *remediator.Remediator, server *http.Server, reloader *reload.Reloader, approvers *approvalTokensFile, logger *slog.Logger) int {
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	if approvers != nil && f.approvalsRefresh > 0 {
		go approvers.watch(workCtx, f.approvalsRefresh)
	}
	workersDone := make(chan struct{})
	go func() {
		rem.Run(workCtx)
		close(workersDone)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(server, f.web, logger) }()

	hupCtx, stopHUP := context.WithCancel(context.Background())
	reloader.HandleSIGHUP(hupCtx)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-signals:
		logger.Info("shutting down", "signal", s.String(), "grace_period", f.gracePeriod)
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("web server failed", "err", err)
			code = 1
		}
	}
	stopHUP()
	// Stop accepting (the webhook answers 503, /-/ready fails) and finish
	// what was acknowledged, within the grace period.
	graceCtx, cancel := context.WithTimeout(context.Background(), f.gracePeriod)
	defer cancel()
	if err := rem.Shutdown(graceCtx); err != nil {
		logger.Error("shutdown incomplete", "err", err)
	}
	stopWork()
	<-workersDone
	httpCtx, cancelHTTP := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelHTTP()
	_ = server.Shutdown(httpCtx)
	return code
}
