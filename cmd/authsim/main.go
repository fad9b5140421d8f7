// Command authsim simulates auth-service for tests and demos: it serves the
// service's metrics and /health, writes its JSON log lines, and can be
// switched at run time (POST /admin/fault) to fail, slow down, hold memory,
// turn unhealthy or come under a brute-force attack.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/warden-sre/warden/internal/authsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run serves until ctx ends. ready, when not nil, receives the address
// listened on.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) int {
	app := kingpin.New("authsim", "Simulated auth-service: metrics, /health, JSON logs and fault switches.")
	var (
		listen     = app.Flag("listen", "Address to serve /metrics, /health, /api/v1/auth/login and /admin/* on.").Default("127.0.0.1:8080").String()
		logFile    = app.Flag("log-file", `File to append JSON log lines to ("-" for standard output).`).Default("-").String()
		rate       = app.Flag("rate", "Simulated requests per second of normal traffic.").Default("20").Float64()
		instanceID = app.Flag("instance-id", "Identifier of this copy (default: host name and process id).").String()
		seed       = app.Flag("seed", "Seed of the simulated traffic (0: random).").Uint64()
		errorRate  = app.Flag("error-rate", "Initial fraction of requests answered with 500.").Float64()
		latency    = app.Flag("latency", "Initial latency added to every request.").Duration()
		memoryMB   = app.Flag("memory-mb", "Initial memory to hold, in MiB.").Int()
		bfSources  = app.Flag("brute-force-source", "Source address of a brute-force attack (repeatable).").Strings()
		bfRate     = app.Flag("brute-force-rate", "Failed logins per second from the brute-force sources.").Float64()
		unhealthy  = app.Flag("unhealthy", "Start with /health answering 503.").Bool()
		blocklist  = app.Flag("blocklist-file", "nginx deny lines of a gateway in front of the service, read at start and on POST /-/reload.").String()
	)
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	if *instanceID == "" {
		host, _ := os.Hostname()
		*instanceID = host + "-" + strconv.Itoa(os.Getpid())
	}
	var logOut io.Writer = os.Stdout
	if *logFile != "-" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			logger.Error("cannot open log file", "err", err)
			return 1
		}
		defer f.Close()
		logOut = f
	}
	sim, err := authsim.New(authsim.Config{
		InstanceID: *instanceID,
		Rate:       *rate,
		Log:        logOut,
		Seed:       *seed,
		Logger:     logger,
		Fault: authsim.Fault{
			ErrorRate:  *errorRate,
			Latency:    authsim.Duration(*latency),
			MemoryMB:   *memoryMB,
			BruteForce: authsim.BruteForce{Sources: *bfSources, Rate: *bfRate},
			Unhealthy:  *unhealthy,
		},
	})
	if err != nil {
		logger.Error("invalid settings", "err", err)
		return 2
	}

	if *blocklist != "" {
		g, err := authsim.NewGateway(*blocklist)
		if err != nil {
			logger.Error("invalid blocklist", "err", err)
			return 2
		}
		sim.SetGateway(g)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("cannot listen", "err", err)
		return 1
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go sim.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("authsim listening", "address", ln.Addr().String(), "instance_id", *instanceID, "rate", *rate)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			logger.Error("server failed", "err", err)
			return 1
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return 0
}
