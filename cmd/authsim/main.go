// Command authsim simulates auth-service for tests and demos: it serves the
// service's metrics and /health, writes its JSON log lines, and can be
// switched at run time (POST /admin/fault) to fail, slow down, hold memory,
// turn unhealthy or come under attack: brute force, password spraying,
// credential stuffing, an account takeover, lockouts; a NAT adds the
// ordinary logins of many people behind one address.
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

		spraySource   = app.Flag("spraying-source", "Source address of a password-spraying attack.").String()
		sprayAccounts = app.Flag("spraying-accounts", "Accounts the spraying attack tries, one failed login each in turn.").Default("500").Int()
		sprayRate     = app.Flag("spraying-rate", "Failed logins per second of the spraying attack (0: off).").Float64()
		stuffSources  = app.Flag("stuffing-sources", "Source addresses (from 198.18.0.0/15) of a credential-stuffing attack.").Default("2000").Int()
		stuffAccounts = app.Flag("stuffing-accounts", "Accounts the stuffing attack tries, once or twice each.").Default("10000").Int()
		stuffRate     = app.Flag("stuffing-rate", "Failed logins per second of the stuffing attack (0: off).").Float64()
		takeSource    = app.Flag("takeover-source", "Source address of an account takeover.").String()
		takeUser      = app.Flag("takeover-user", "Account taken over: failed logins, then a success.").Default("user-0042").String()
		takeFailures  = app.Flag("takeover-failures", "Failed logins before the takeover's success.").Default("10").Int()
		takeRate      = app.Flag("takeover-rate", "Logins per second of the takeover (0: off).").Float64()
		lockoutRate   = app.Flag("lockout-rate", "Account lockouts per second, each after five failed logins (0: off).").Float64()
		natSource     = app.Flag("nat-source", "Address of a NAT with many people behind it.").String()
		natUsers      = app.Flag("nat-users", "People behind the NAT.").Default("1000").Int()
		natRate       = app.Flag("nat-rate", "Logins per second through the NAT (0: off).").Float64()
		blocklist     = app.Flag("blocklist-file", "nginx deny lines of a gateway in front of the service, read at start and on POST /-/reload.").String()
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
			Spraying:   authsim.Spraying{Source: *spraySource, Accounts: *sprayAccounts, Rate: *sprayRate},
			Stuffing:   authsim.Stuffing{Sources: *stuffSources, Accounts: *stuffAccounts, Rate: *stuffRate},
			Takeover:   authsim.Takeover{Source: *takeSource, User: *takeUser, Failures: *takeFailures, Rate: *takeRate},
			Lockouts:   authsim.Lockouts{Rate: *lockoutRate},
			NAT:        authsim.NAT{Source: *natSource, Users: *natUsers, Rate: *natRate},
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
