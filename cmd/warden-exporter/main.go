// Command warden-exporter serves PostgreSQL, Redis, certificate-expiry and
// auth-service security metrics to Prometheus, collected at scrape time.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/warden-sre/warden/exporter"
	"github.com/warden-sre/warden/internal/redislog"
	"github.com/warden-sre/warden/internal/reload"
	"github.com/warden-sre/warden/internal/selfmetrics"
)

const defaultListenAddress = ":10187"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	app := kingpin.New("warden-exporter", "Prometheus exporter for PostgreSQL, Redis, TLS certificate expiry and auth-service security events.")
	var (
		configFile  = app.Flag("config.file", "Path to the exporter's YAML configuration.").Default("warden-exporter.yml").String()
		configCheck = app.Flag("config.check", "Validate the configuration file and exit (non-zero when invalid).").Bool()
		metricsPath = app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		enablePprof = app.Flag("web.enable-pprof", "Serve Go profiling endpoints under /debug/pprof/ (linked from the landing page).").Bool()
		webConfig   = kingpinflag.AddFlags(app, defaultListenAddress)
	)
	promslogConfig := &promslog.Config{}
	flag.AddFlags(app, promslogConfig)
	app.Version(version.Print("warden-exporter"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(promslogConfig)
	// go-redis reports failed dials on its own; redis_up already says so.
	redislog.Install(logger)

	cfg, err := exporter.LoadConfig(*configFile)
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		return 1
	}
	if *configCheck {
		fmt.Printf("%s: configuration is valid (%d postgres, %d redis targets, certs %t, auth %t, %d probe modules)\n",
			*configFile, len(cfg.Postgres), len(cfg.Redis), cfg.Certs != nil, cfg.Auth != nil, len(cfg.Modules))
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	self := selfmetrics.NewRegistry("warden_exporter")

	set, err := exporter.Build(ctx, cfg, logger, nil)
	if err != nil {
		logger.Error("cannot build collectors", "err", err)
		return 1
	}
	exp := exporter.New(logger, set, cfg.Scrape, self)

	reloader := reload.New(reload.Options{
		Namespace:      "warden_exporter",
		Subject:        "configuration",
		SuccessfulHelp: "Whether the last configuration load or reload succeeded (1) or not (0).",
		TimestampHelp:  "When the configuration was last loaded successfully, as a Unix timestamp.",
	}, func() error {
		newCfg, err := exporter.LoadConfig(*configFile)
		if err == nil {
			var newSet *exporter.Set
			// Collectors whose configuration is unchanged are carried
			// over, with their connections and counters.
			if newSet, err = exporter.Build(ctx, newCfg, logger, exp.Current()); err == nil {
				// The old set closes what was not carried over as soon
				// as the scrapes still running on it have ended.
				exp.Swap(newSet, newCfg.Scrape).Retire()
			}
		}
		if err != nil {
			logger.Error("configuration reload failed; keeping the previous configuration", "err", err)
			return err
		}
		logger.Info("configuration reloaded", "file", *configFile)
		return nil
	})
	self.MustRegister(reloader)
	reloader.Loaded()
	reloader.HandleSIGHUP(ctx)

	mux := http.NewServeMux()
	mux.Handle(*metricsPath, exp)
	mux.HandleFunc("/probe", exp.ServeProbe)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy.") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Ready.") })
	mux.Handle("/-/reload", reloader.Handler())
	if *enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if *metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "warden-exporter",
			Description: "PostgreSQL, Redis, TLS certificate and auth-service security metrics, collected at scrape time.",
			Version:     version.Info(),
			// The page links the profiles only when they are served.
			Profiling: strconv.FormatBool(*enablePprof),
			Links: []web.LandingLinks{
				{Address: *metricsPath, Text: "Metrics"},
				{Address: "/probe", Text: "Probe (target and module parameters)"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness"},
			},
		})
		if err != nil {
			logger.Error("landing page", "err", err)
			return 1
		}
		mux.Handle("/", landing)
	}

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	if listeners, ok, err := listen(webConfig); err != nil {
		logger.Error("cannot listen", "err", err)
		_ = exp.Close()
		return 1
	} else if ok {
		go func() { errc <- web.ServeMultiple(listeners, srv, webConfig, logger) }()
	} else {
		// systemd socket activation or vsock: exporter-toolkit opens the
		// listeners itself, and a failure shows right after this line.
		go func() { errc <- web.ListenAndServe(srv, webConfig, logger) }()
	}
	logger.Info("warden-exporter started", "config", *configFile, "collectors", len(set.Collectors))

	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server failed", "err", err)
			return 1
		}
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	_ = exp.Close() // logs its own failure
	return 0
}

// listen opens the TCP listen addresses before the server starts, so that
// a failure to bind is reported before anything claims the exporter
// started. ok is false when exporter-toolkit must open the listeners
// itself (systemd socket activation, vsock addresses).
func listen(flags *web.FlagConfig) (listeners []net.Listener, ok bool, err error) {
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		return nil, false, nil
	}
	for _, addr := range *flags.WebListenAddresses {
		if strings.HasPrefix(addr, "vsock://") {
			return nil, false, nil
		}
	}
	if err := web.Validate(*flags.WebConfigFile); err != nil {
		return nil, false, fmt.Errorf("web configuration: %w", err)
	}
	for _, addr := range *flags.WebListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, open := range listeners {
				_ = open.Close()
			}
			return nil, false, err
		}
		listeners = append(listeners, l)
	}
	return listeners, true, nil
}
