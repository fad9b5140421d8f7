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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warden-sre/warden/internal/redislog"
	"github.com/warden-sre/warden/internal/reload"
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
	app := kingpin.New("warden-remediator", "Receives Alertmanager webhooks and performs safe Level-1 fixes, at most once per alert occurrence and target.")
	var (
		configFile     = app.Flag("config.file", "Remediation policy (YAML).").Default("remediator.yml").String()
		configCheck    = app.Flag("config.check", "Validate the policy and the web configuration, then exit.").Bool()
		tokenFile      = app.Flag("web.bearer-token-file", "File with the bearer token Alertmanager sends (http_config.authorization.credentials_file).").String()
		basicUser      = app.Flag("web.basic-auth.username", "Username Alertmanager sends with basic auth.").String()
		basicPassFile  = app.Flag("web.basic-auth.password-file", "File with the basic-auth password.").String()
		noAuth         = app.Flag("no-auth", "Accept webhook requests without any authentication (testing only; logs a warning).").Bool()
		maxBody        = app.Flag("web.max-body-bytes", "Largest webhook body accepted (larger: 413).").Default("1048576").Int64()
		queueSize      = app.Flag("queue.size", "Alerts accepted but not yet handled; when full the webhook answers 503 so Alertmanager retries.").Default("1000").Int()
		workers        = app.Flag("queue.workers", "Alerts handled concurrently.").Default("4").Int()
		kubeconfig     = app.Flag("kubeconfig", "Kubeconfig file; empty means in-cluster configuration.").Default("").String()
		dryRun         = app.Flag("dry-run", "Evaluate and record every decision, change nothing (overrides the policy).").Bool()
		identity       = app.Flag("identity", "Name of this replica in Leases and Events (default: $POD_NAME, else the host name).").Default("").String()
		gracePeriod    = app.Flag("shutdown.grace-period", "On SIGTERM, time to finish queued alerts before exiting.").Default("30s").Duration()
		webFlagsConfig = kingpinflag.AddFlags(app, defaultListenAddress)
		logConfig      = &promslog.Config{}
	)
	promslogflag.AddFlags(app, logConfig)
	app.Version(version.Print("warden-remediator"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(logConfig)
	// go-redis reports failed dials on its own; the flush's outcome says so.
	redislog.Install(logger)

	loadAuth := func(requireAuth bool) (remediator.Auth, error) {
		a := remediator.Auth{Username: *basicUser, Disabled: *noAuth}
		if *tokenFile != "" {
			t, err := readSecret(*tokenFile)
			if err != nil {
				return a, fmt.Errorf("--web.bearer-token-file: %w", err)
			}
			a.BearerToken = t
		}
		if *basicUser != "" {
			if *basicPassFile == "" {
				return a, errors.New("--web.basic-auth.username needs --web.basic-auth.password-file")
			}
			p, err := readSecret(*basicPassFile)
			if err != nil {
				return a, fmt.Errorf("--web.basic-auth.password-file: %w", err)
			}
			a.Password = p
		} else if *basicPassFile != "" {
			return a, errors.New("--web.basic-auth.password-file needs --web.basic-auth.username")
		}
		if requireAuth && !a.Configured() && !a.Disabled {
			return a, errors.New("no webhook authentication configured: set --web.bearer-token-file and/or --web.basic-auth.username with --web.basic-auth.password-file (or --no-auth to accept anyone)")
		}
		return a, nil
	}

	policy, err := remediator.LoadPolicy(*configFile)
	if err != nil {
		logger.Error("cannot load policy", "file", *configFile, "err", err)
		return 1
	}
	// --config.check validates the policy alone; credentials are checked
	// when given.
	auth, err := loadAuth(!*configCheck)
	if err != nil {
		logger.Error("invalid authentication settings", "err", err)
		return 1
	}
	if *webFlagsConfig.WebConfigFile != "" {
		if err := web.Validate(*webFlagsConfig.WebConfigFile); err != nil {
			logger.Error("invalid web configuration", "file", *webFlagsConfig.WebConfigFile, "err", err)
			return 1
		}
	}
	if *configCheck {
		fmt.Printf("%s: %d rules, %d redis targets, mode %s: OK\n", *configFile, len(policy.Rules), len(policy.Redis), policy.Mode)
		return 0
	}
	if auth.Disabled {
		logger.Warn("webhook authentication is DISABLED (--no-auth): anyone who can reach the listen address can trigger remediation")
	}
	if *dryRun || policy.DryRun {
		logger.Warn("dry-run: decisions are recorded, nothing is changed")
	}

	restConfig, err := kubeConfig(*kubeconfig)
	if err != nil {
		logger.Error("kubernetes configuration", "err", err)
		return 1
	}
	restConfig.UserAgent = "warden-remediator"
	// Duplicate deliveries each read a Lease; client-go's default of 5 QPS
	// would turn an Alertmanager burst into a backlog.
	restConfig.QPS, restConfig.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		logger.Error("kubernetes client", "err", err)
		return 1
	}
	id := *identity
	if id == "" {
		id = os.Getenv("POD_NAME")
	}
	if id == "" {
		id, _ = os.Hostname()
	}

	reg := selfmetrics.NewRegistry("warden_remediator")
	exec := actions.NewExecutor(kube, logger.With("component", "actions"), actions.WithIdentity(id))
	rem, err := remediator.New(remediator.Options{
		Kube:         kube,
		Executor:     exec,
		Logger:       logger.With("component", "remediator"),
		Registerer:   reg,
		Identity:     id,
		QueueSize:    *queueSize,
		Workers:      *workers,
		DryRun:       *dryRun,
		Auth:         auth,
		MaxBodyBytes: *maxBody,
	}, policy)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}

	reloader := reload.New(reload.Options{
		Namespace:      "warden_remediator",
		Subject:        "policy",
		SuccessfulHelp: "1 if the last policy (re)load succeeded, 0 if it failed and the previous policy stays in force.",
		TimestampHelp:  "Unix time of the last successful policy (re)load.",
	}, func() error {
		p, err := remediator.LoadPolicy(*configFile)
		if err == nil {
			var a remediator.Auth
			if a, err = loadAuth(true); err == nil {
				rem.SetPolicy(p)
				rem.SetAuth(a)
				logger.Info("policy reloaded", "file", *configFile, "rules", len(p.Rules))
				return nil
			}
		}
		logger.Error("reload failed, keeping the previous policy", "file", *configFile, "err", err)
		return err
	})
	reg.MustRegister(reloader)
	reloader.Loaded()

	mux := http.NewServeMux()
	mux.Handle("/api/v1/alerts", rem.WebhookHandler())
	mux.Handle("/webhook", rem.WebhookHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)}))
	mux.Handle("/-/healthy", rem.HealthHandler())
	mux.Handle("/-/ready", rem.ReadyHandler())
	mux.Handle("/-/reload", reloader.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("warden-remediator\n\nPOST /api/v1/alerts  Alertmanager webhook (version 4)\n/metrics /-/healthy /-/ready /-/reload\n"))
	})
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}

	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	workersDone := make(chan struct{})
	go func() {
		rem.Run(workCtx)
		close(workersDone)
	}()
	serveErr := make(chan error, 1)
	go func() {
		logger.Info("starting warden-remediator", "version", version.Info(), "identity", id, "listen", strings.Join(*webFlagsConfig.WebListenAddresses, ","), "rules", len(policy.Rules))
		serveErr <- web.ListenAndServe(server, webFlagsConfig, logger)
	}()

	hupCtx, stopHUP := context.WithCancel(context.Background())
	reloader.HandleSIGHUP(hupCtx)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-signals:
		logger.Info("shutting down", "signal", s.String(), "grace_period", *gracePeriod)
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("web server failed", "err", err)
			code = 1
		}
	}
	stopHUP()
	// Stop accepting (the webhook answers 503, /-/ready fails) and finish
	// what was acknowledged, within the grace period.
	graceCtx, cancel := context.WithTimeout(context.Background(), *gracePeriod)
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

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (set --kubeconfig outside a cluster): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
