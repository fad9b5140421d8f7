// Command warden-demo runs warden's whole loop on this machine, on loopback
// only, and plays a scripted incident scenario while printing a timeline:
// PostgreSQL with a streaming replica, Redis, two auth-service simulators,
// warden-exporter with every collector, Prometheus with warden's rules,
// Alertmanager, two warden-remediator replicas and a kube-apiserver with a
// stand-in kubelet. After the scenario it prints `warden-report daily` of
// the demo's Prometheus; staying up, it lists the URLs (the remediators'
// status pages among them) and the Grafana dashboards to import.
// It needs the tools of scripts/tools.sh (run it through `make demo`).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/warden-sre/warden/internal/demo"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	app := kingpin.New("warden-demo", "Run warden's whole loop on loopback and play an incident scenario.")
	var (
		exitAfter = app.Flag("exit-after-scenario", "Stop everything and exit once the scenario has played (default: keep running until Ctrl-C).").Bool()
		factor    = app.Flag("time-factor", "How many times faster than real time the rules run (30: a 5-minute window lasts 10 seconds).").Default("30").Int()
	)
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *factor < 1 {
		fmt.Fprintln(os.Stderr, "--time-factor must be at least 1")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tl := demo.NewTimeline(os.Stdout)
	tl.Printf("DEMO", "starting warden's loop on loopback (first run: builds the binaries; tools come from scripts/tools.sh)")
	startCtx, cancelStart := context.WithTimeout(ctx, 10*time.Minute)
	env, err := demo.Start(startCtx, demo.Options{Timeline: tl, TimeFactor: *factor})
	cancelStart()
	if err != nil {
		fmt.Fprintf(os.Stderr, "warden-demo: %v\n", err)
		return 1
	}
	defer func() {
		tl.Printf("DEMO", "stopping every process and removing temporary files")
		env.Stop()
	}()
	for _, u := range env.URLs() {
		tl.Printf("DEMO", "%-20s %s", u[0], u[1])
	}

	code := 0
	if err := env.Play(ctx); err != nil {
		if ctx.Err() != nil {
			return 130
		}
		fmt.Fprintf(os.Stderr, "warden-demo: scenario failed: %v\n", err)
		code = 1
	} else {
		tl.Printf("DEMO", "scenario complete: every step behaved as expected")
	}
	if err := env.PrintDaily(ctx); err != nil {
		tl.Printf("DEMO", "daily report: %v", err)
	}
	if *exitAfter {
		return code
	}
	for _, u := range env.URLs() {
		tl.Printf("DEMO", "%-20s %s", u[0], u[1])
	}
	printDashboards(tl, env)
	tl.Printf("DEMO", "everything keeps running; press Ctrl-C to stop (and remove everything)")
	<-ctx.Done()
	return code
}

// printDashboards tells how to look at the demo in Grafana: the dashboards
// are plain JSON files with a data source variable, imported by hand.
func printDashboards(tl *demo.Timeline, env *demo.Env) {
	boards, err := env.Dashboards()
	if err != nil {
		tl.Printf("DEMO", "dashboards: %v", err)
		return
	}
	tl.Printf("DEMO", "Grafana dashboards (dashboards/*.json):")
	for _, b := range boards {
		tl.Printf("DEMO", "  %-32s %s", b.Title, b.File)
	}
	tl.Printf("DEMO", "import them into a Grafana on this machine (it must reach %s):", env.Prometheus.URL)
	for i, line := range []string{
		"Connections → Data sources → Add data source → Prometheus, URL " + env.Prometheus.URL + " → Save & test",
		"Dashboards → New → Import → Upload dashboard JSON file → one of the files above",
		"choose the Prometheus data source of step 1 → Import; repeat for each file",
		"set the time range to the last 15 minutes: the whole scenario is in it",
	} {
		tl.Printf("DEMO", "  %d. %s", i+1, line)
	}
}
