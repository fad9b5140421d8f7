package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/warden-sre/warden/internal/report"
)

// DailyReport is `warden-report daily` run against the demo's Prometheus
// at the time at.
type DailyReport struct {
	Report *report.Report
	// Markdown and HTML are the report's two renderings; HTMLFile holds
	// the HTML, a self-contained page to open in a browser.
	Markdown []byte
	HTMLFile string
}

// Daily builds the daily health check from the demo's Prometheus, as
// `warden-report daily --prometheus.url <Prometheus>` does, and writes its
// HTML beside the demo's logs. Failed queries are in the report (and in
// the returned error); the report is returned whenever it could be built.
func (e *Env) Daily(ctx context.Context, at time.Time) (*DailyReport, error) {
	client, err := api.NewClient(api.Config{Address: e.Prometheus.URL})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	rep, buildErr := report.Build(ctx, v1.NewAPI(client), report.Daily, at, report.Options{
		Namespace: Namespace, QueryTimeout: time.Minute,
		// The demo's history is minutes long, its time compressed
		// TimeFactor times: the charts' 15-minute steps become 30 s.
		ChartStep: 15 * time.Minute / time.Duration(e.opts.TimeFactor),
	})
	if rep == nil {
		return nil, buildErr
	}
	out := &DailyReport{Report: rep, HTMLFile: filepath.Join(e.dir, "report-daily.html")}
	var md, html bytes.Buffer
	if err := report.Markdown(&md, rep); err != nil {
		return nil, fmt.Errorf("render Markdown: %w", err)
	}
	out.Markdown = md.Bytes()
	if err := report.HTML(&html, rep); err != nil {
		return nil, fmt.Errorf("render HTML: %w", err)
	}
	if err := os.WriteFile(out.HTMLFile, html.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "report-daily.md"), out.Markdown, 0o644); err != nil {
		return nil, err
	}
	return out, buildErr
}

// PrintDaily builds the daily report and prints it, in Markdown, to the
// timeline, with where the HTML version is.
func (e *Env) PrintDaily(ctx context.Context) error {
	e.tl.Printf("REPORT", "warden-report daily --prometheus.url %s", e.Prometheus.URL)
	rep, err := e.Daily(ctx, time.Now())
	if rep == nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(string(rep.Markdown), "\n"), "\n") {
		e.tl.Printf("REPORT", "%s", line)
	}
	e.tl.Printf("REPORT", "the same as HTML with charts: file://%s", rep.HTMLFile)
	return err
}
