// Command warden-report writes the operations runbook's routine checks
// (daily health check, weekly security review, monthly capacity review,
// monthly security report) as one report computed from Prometheus, in
// Markdown or as a self-contained HTML file with charts.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/warden-sre/warden/internal/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, builds the report and writes it; it returns the exit
// code: 0 done, 1 a query failed or the report could not be written, 2 bad
// arguments.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("warden-report", "Writes the runbook's routine checks as a report computed from Prometheus: daily health check, weekly security review, monthly capacity review, monthly security report.")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)
	kinds := make([]string, len(report.Kinds))
	for i, k := range report.Kinds {
		kinds[i] = string(k)
	}
	var (
		kind         = app.Arg("report", "Which report: "+strings.Join(kinds, ", ")+".").Required().Enum(kinds...)
		promURL      = app.Flag("prometheus.url", "Base URL of the Prometheus HTTP API.").Default("http://localhost:9090").URL()
		promConfig   = app.Flag("prometheus.config.file", "HTTP client configuration for Prometheus (YAML, Prometheus's http_config: basic_auth, authorization, oauth2, tls_config, proxy_url).").String()
		atFlag       = app.Flag("at", "End of the report's window: RFC 3339 (2026-03-02T09:00:00Z), Unix seconds, \"now\", or now minus a duration (now-1d, -12h).").Default("now").String()
		output       = app.Flag("output", "Format: md (Markdown) or html (one self-contained file with SVG charts).").Default("md").Enum("md", "html")
		outFile      = app.Flag("out", "File to write (replaced atomically); {date} in the name becomes the report's end date (UTC, 2006-01-02); - is standard output.").Default("-").String()
		namespace    = app.Flag("namespace", "Kubernetes namespace of auth-service and policy-service (CPU and memory queries).").Default("rust-security").String()
		queryTimeout = app.Flag("query.timeout", "Time limit of each PromQL query.").Default("2m").Duration()
		logConfig    = &promslog.Config{}
	)
	promslogflag.AddFlags(app, logConfig)
	app.Version(version.Print("warden-report"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	logConfig.Writer = stderr
	logger := promslog.New(logConfig)

	at, err := parseAt(*atFlag, time.Now())
	if err != nil {
		logger.Error("invalid --at", "err", err)
		return 2
	}
	httpConfig := config.DefaultHTTPClientConfig
	if *promConfig != "" {
		cfg, _, err := config.LoadHTTPConfigFile(*promConfig)
		if err != nil {
			logger.Error("invalid --prometheus.config.file", "file", *promConfig, "err", err)
			return 2
		}
		httpConfig = *cfg
	}
	rt, err := config.NewRoundTripperFromConfig(httpConfig, "warden-report")
	if err != nil {
		logger.Error("prometheus HTTP client", "err", err)
		return 2
	}
	client, err := api.NewClient(api.Config{Address: (*promURL).String(), RoundTripper: rt})
	if err != nil {
		logger.Error("prometheus client", "url", (*promURL).Redacted(), "err", err)
		return 2
	}

	rep, err := report.Build(ctx, v1.NewAPI(client), report.Kind(*kind), at, report.Options{Namespace: *namespace, QueryTimeout: *queryTimeout})
	if rep == nil {
		logger.Error("cannot build report", "err", err)
		return 1
	}
	failed, total := rep.Failed()
	if failed == total {
		// Nothing to show: keep the previous report rather than replace it
		// with a page of errors.
		logger.Error("every query failed; no report written", "prometheus", (*promURL).Redacted(), "err", err)
		return 1
	}
	out := strings.ReplaceAll(*outFile, "{date}", at.UTC().Format(time.DateOnly))
	if err := write(out, *output, rep, stdout); err != nil {
		logger.Error("cannot write report", "out", out, "err", err)
		return 1
	}
	if err != nil {
		logger.Warn("report written with failed queries", "failed", failed, "checks", total, "err", err)
		return 1
	}
	logger.Info("report written", "report", *kind, "at", at.UTC().Format(time.RFC3339), "out", out, "checks", total)
	return 0
}

// parseAt reads --at: RFC 3339, Unix seconds, "now", or now minus a
// Prometheus duration ("now-1d", "-12h").
func parseAt(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "now" {
		return now, nil
	}
	if rel, ok := strings.CutPrefix(s, "now"); ok {
		s = rel
	}
	if d, ok := strings.CutPrefix(s, "-"); ok {
		dur, err := model.ParseDuration(d)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: %w", s, err)
		}
		return now.Add(-time.Duration(dur)), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(0, int64(secs*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339, Unix seconds, now, nor now-<duration>", s)
}

// write renders the report to path, or to stdout for "-". A file is
// written beside its final name and renamed, so a reader (a web server on
// the same volume) never sees half a report.
func write(path, format string, rep *report.Report, stdout io.Writer) error {
	render := report.Markdown
	if format == "html" {
		render = report.HTML
	}
	if path == "-" {
		return render(stdout, rep)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = render(f, rep)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
