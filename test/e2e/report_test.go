package e2e

import (
	"context"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"gonum.org/v1/plot/plotutil"

	"github.com/warden-sre/warden/internal/browser"
	"github.com/warden-sre/warden/internal/demo"
	"github.com/warden-sre/warden/internal/report"
)

// crossChecked are the daily report's tables whose every column is
// queried again straight from Prometheus, by title, with a row the
// scenario must have produced (label values in the table's label order).
var crossChecked = map[string][]string{
	"Targets up":                {"auth-service"},
	"Alerts that fired":         {"HighErrorRate", "critical"},
	"Actions":                   {"restart", "success"},
	"Decisions not to act":      {"duplicate"},
	"Circuit breakers open now": nil,
	"Escalations to on-call":    nil,
	"Filesystems with the least space available": nil,
}

// missingInDemo are checks of the daily report that read metrics the demo
// does not have (no node_exporter runs in it): the report must say the
// data is missing, not show zero or "none".
var missingInDemo = []string{"Filesystems with the least space available"}

// checkDailyReport builds `warden-report daily` from the demo's Prometheus
// at a fixed time just behind now (so no scrape lands in the window
// between the report's queries and the test's), and checks that each
// cross-checked table holds exactly what the same PromQL returns at that
// time, and that what the demo lacks is reported missing.
func checkDailyReport(ctx context.Context, t *testing.T, env *demo.Env) *demo.DailyReport {
	at := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	rep, err := env.Daily(ctx, at)
	if rep == nil {
		t.Fatalf("daily report: %v", err)
	}
	if err != nil {
		t.Errorf("daily report has failed queries: %v", err)
	}
	client, err := api.NewClient(api.Config{Address: env.Prometheus.URL})
	if err != nil {
		t.Fatal(err)
	}
	prom := v1.NewAPI(client)
	results := map[string]report.Result{}
	for _, s := range rep.Report.Sections {
		for _, r := range s.Results {
			results[r.Title] = r
		}
	}
	for title, mustHave := range crossChecked {
		res, ok := results[title]
		if !ok {
			t.Errorf("daily report has no check %q", title)
			continue
		}
		if res.Type != report.Table || res.Err != "" {
			t.Errorf("%q: type %v, error %q; want a table that ran", title, res.Type, res.Err)
			continue
		}
		rows := map[string]report.Row{}
		for _, row := range res.Rows {
			rows[strings.Join(row.Labels, "|")] = row
		}
		if mustHave != nil {
			if _, ok := rows[strings.Join(mustHave, "|")]; !ok {
				t.Errorf("%q has no row %v; rows: %v", title, mustHave, res.Rows)
			}
		}
		for ci, col := range res.Columns {
			v, _, _, err := prom.Query(ctx, col.Query, at)
			if err != nil {
				t.Errorf("%q column %q: %v", title, col.Header, err)
				continue
			}
			vec, _ := v.(model.Vector)
			direct := map[string]float64{}
			for _, s := range vec {
				key := make([]string, len(res.Labels))
				for i, l := range res.Labels {
					key[i] = string(s.Metric[model.LabelName(l)])
				}
				direct[strings.Join(key, "|")] = float64(s.Value)
			}
			for key, want := range direct {
				row, ok := rows[key]
				switch {
				case !ok && ci > 0:
					// The first column chooses the rows; the others only
					// fill them in.
				case !ok:
					t.Errorf("%q: Prometheus has %s=%v for row %s, the report has no such row", title, col.Header, want, key)
				case !row.Cells[ci].OK || !closeTo(row.Cells[ci].Value, want):
					t.Errorf("%q row %s column %q: report %v (ok %v), Prometheus %v", title, key, col.Header, row.Cells[ci].Value, row.Cells[ci].OK, want)
				}
			}
			if ci == 0 && len(direct) != len(res.Rows) {
				t.Errorf("%q: %d rows in the report, Prometheus returns %d series for %s", title, len(res.Rows), len(direct), col.Query)
			}
		}
		t.Logf("%q: %d rows match Prometheus", title, len(res.Rows))
	}
	for _, title := range missingInDemo {
		res := results[title]
		if res.Missing == "" || !strings.HasPrefix(res.Status(), "no data") {
			t.Errorf("%q: status %q, want it reported as missing data (the demo has no such metric)", title, res.Status())
		}
		// The Markdown says so under the check's heading.
		_, section, _ := strings.Cut(string(rep.Markdown), "### "+title+"\n")
		section, _, _ = strings.Cut(section, "PromQL:")
		if !strings.Contains(section, "no data (") {
			t.Errorf("the Markdown report does not say %q is missing:\n%s", title, section)
		}
	}
	return rep
}

func closeTo(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// checkInBrowser loads what a person would open after the scenario in
// Chromium: each remediator replica's status page, which must show the
// scenario's restart, and the daily report's HTML, whose charts must
// render. Screenshots are saved for a person to look at.
func checkInBrowser(t *testing.T, env *demo.Env, rep *demo.DailyReport) {
	tab := browser.Start(t)
	// A page that never shows what is waited for fails the test instead
	// of hanging it.
	ctx, cancel := context.WithTimeout(tab, 5*time.Minute)
	defer cancel()
	browser.SetAuthorization(ctx, t, browser.BasicAuth(demo.StatusUser, env.StatusPassword()))
	for i := range env.RemediatorURLs {
		url := env.StatusPageURL(i, false)
		if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible("#rules")); err != nil {
			t.Fatalf("load status page %s: %v", url, err)
		}
		browser.Screenshot(ctx, t, "status-page-"+string(rune('0'+i)))
		// The restart is on record with its verified outcome (the
		// scenario waited for every action's).
		got := browser.Text(ctx, t, "#occurrences")
		if !slices.ContainsFunc(strings.Split(got, "\n"), func(row string) bool {
			return strings.Contains(row, "deployment/auth-service") && strings.Contains(row, "\teffective after ")
		}) {
			t.Errorf("status page %d: actions on record %q, want the restart of deployment/auth-service effective after some seconds", i, got)
		}
		// The ring keeps the last 200 decisions: which alerts are still in
		// it after the scenario depends on how often Alertmanager repeated
		// them, so only its presence is checked.
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("table#recent tr").length`))
		if err != nil {
			t.Fatal(err)
		}
		if rows < 2 {
			t.Errorf("status page %d: no recent decision of the replica shown", i)
		}
		if got := browser.Text(ctx, t, "#targets"); !strings.Contains(got, "warden-remediator-") {
			t.Errorf("status page %d: targets %q, want the Lease's last writer", i, got)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+rep.HTMLFile), chromedp.WaitVisible("body > h1")); err != nil {
		t.Fatalf("load the HTML report: %v", err)
	}
	browser.Screenshot(ctx, t, "report-daily")
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg").length`))
	if err != nil {
		t.Fatal(err)
	}
	if charts == 0 {
		t.Error("the HTML report shows no chart (no svg element)")
	}
	// A chart that rendered has a size and a series line: a path in the
	// first series' colour with more points than the legend's two-point
	// sample (the axes and the grid are drawn in black and grey).
	first := color.RGBAModel.Convert(plotutil.Color(0)).(color.RGBA)
	stroke := fmt.Sprintf("stroke:#%02X%02X%02X", first.R, first.G, first.B)
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`Array.from(document.querySelectorAll("svg")).some(s => s.getBoundingClientRect().width > 100 &&
		Array.from(s.querySelectorAll("path")).some(p => (p.getAttribute("style") || "").includes(%q) && ((p.getAttribute("d") || "").match(/L/g) || []).length > 1))`, stroke)))
	if err != nil {
		t.Fatal(err)
	}
	if !drawn {
		t.Errorf("no chart of the HTML report has a size and a series line (a path with %s and more than two points)", stroke)
	}
	if got := browser.Text(ctx, t, "body > h1"); !strings.Contains(got, "Daily health check") {
		t.Errorf("the HTML report's title is %q", got)
	}
	t.Logf("%d charts in the daily report", charts)
}
