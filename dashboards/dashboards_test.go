// Package dashboards holds the tests of warden's Grafana dashboards
// (*.json, imported as they are).
package dashboards

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/warden-sre/warden/internal/inventory"
)

const (
	minSchemaVersion = 39
	datasourceVar    = "${datasource}"
	runbookURLPrefix = "https://github.com/warden-sre/warden/blob/main/docs/runbooks/"
	runbookDir       = "../docs/runbooks"
)

var registerPlugins sync.Once

// grafanaUnits are Grafana unit ids (a subset: the ones that fit warden's
// metrics). A unit Grafana does not know is shown as a raw suffix, so a typo
// fails here; add a real Grafana unit id to the list when a panel needs it.
var grafanaUnits = map[string]bool{
	"none": true, "short": true, "percent": true, "percentunit": true, "bool": true, "bool_yes_no": true, "bool_on_off": true,
	"bytes": true, "decbytes": true, "bits": true, "Bps": true, "binBps": true,
	"ns": true, "µs": true, "ms": true, "s": true, "m": true, "h": true, "d": true,
	"dtdurationms": true, "dtdurations": true, "dthms": true, "dtdhms": true, "dateTimeAsIso": true, "dateTimeFromNow": true,
	"reqps": true, "rps": true, "wps": true, "ops": true, "opm": true, "rpm": true, "wpm": true, "iops": true,
}

// parseStrict decodes a dashboard with the Grafana Foundation SDK, which
// rejects unknown fields, missing required fields (including each known
// panel type's required options) and wrong types.
func parseStrict(raw []byte) error {
	registerPlugins.Do(plugins.RegisterDefaultPlugins)
	// The files are classic (schema v1) dashboard JSON, which is what
	// dashboard.Dashboard models; dashboardv2 is a different document.
	//lint:ignore SA1019 the v1 schema is the one these files follow
	var d dashboard.Dashboard
	// On success the SDK returns a non-nil error value with empty text.
	if err := d.UnmarshalJSONStrict(raw); err != nil && err.Error() != "" {
		return err
	}
	return nil
}

// templateVar matches ${name}, ${name:format} and $name; names start with a
// letter or underscore so that label_replace's $1 is left alone.
var templateVar = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[\w-]+)?\}|\$([A-Za-z_]\w*)`)

// substitute replaces Grafana's template variables in a query with values
// that keep it valid PromQL: durations for the interval and range macros,
// a plain word for everything else (variables only appear in label values).
func substitute(expr string) string {
	return templateVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := templateVar.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms", "__range_s":
			return "300"
		}
		return "x"
	})
}

type panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	GridPos     *gridPos        `json:"gridPos"`
	Datasource  json.RawMessage `json:"datasource"`
	FieldConfig *struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's panels
}

type gridPos struct {
	H, W, X, Y int
}

type board struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Links []struct {
		Title string `json:"title"`
		URL   string `json:"url"`
	} `json:"links"`
}

// checkDashboard returns every problem found in one dashboard file.
func checkDashboard(name string, raw []byte) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := parseStrict(raw); err != nil {
		fail("Grafana schema: %v", err)
	}
	var b board
	if err := json.Unmarshal(raw, &b); err != nil {
		return append(errs, fmt.Errorf("decode: %w", err))
	}
	if want := strings.TrimSuffix(name, ".json"); b.UID != want {
		fail("uid is %q; want the stable uid %q (the file name)", b.UID, want)
	}
	if b.Title == "" {
		fail("no title")
	}
	if b.SchemaVersion < minSchemaVersion {
		fail("schemaVersion %d; want at least %d", b.SchemaVersion, minSchemaVersion)
	}

	var generic any
	_ = json.Unmarshal(raw, &generic) // decoded above
	errs = append(errs, datasourceRefs(generic, "$")...)

	errs = append(errs, checkVariables(b)...)
	errs = append(errs, checkLinks(b)...)

	if len(b.Panels) == 0 {
		fail("no panels")
	}
	ids := map[int]string{}
	titles := map[string]bool{}
	var check func(ps []panel)
	check = func(ps []panel) {
		var placed []panel
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID <= 0 {
				fail("%s: id must be a positive number", where)
			} else if prev, dup := ids[p.ID]; dup {
				fail("%s: id %d is also used by %q", where, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.Title == "" {
				fail("%s: no title", where)
			} else if titles[p.Title] {
				fail("%s: another panel has the same title", where)
			}
			titles[p.Title] = true
			switch g := p.GridPos; {
			case g == nil:
				fail("%s: no gridPos", where)
			case g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24:
				fail("%s: gridPos %+v is outside the 24-column grid", where, *g)
			default:
				for _, q := range placed {
					if overlap(*g, *q.GridPos) {
						fail("%s: gridPos %+v overlaps panel %d %q at %+v", where, *g, q.ID, q.Title, *q.GridPos)
					}
				}
				placed = append(placed, p)
			}
			if p.Type == "row" {
				check(p.Panels)
				continue
			}
			if p.FieldConfig == nil || p.FieldConfig.Defaults.Unit == "" {
				fail("%s: fieldConfig.defaults.unit is not set", where)
			} else if u := p.FieldConfig.Defaults.Unit; !grafanaUnits[u] {
				fail("%s: unit %q is not a Grafana unit id", where, u)
			}
			if len(p.Targets) == 0 {
				fail("%s: no queries", where)
			}
			refs := map[string]bool{}
			for i, t := range p.Targets {
				if t.RefID == "" || refs[t.RefID] {
					fail("%s: target %d: refId %q is empty or repeated", where, i, t.RefID)
				}
				refs[t.RefID] = true
				if strings.TrimSpace(t.Expr) == "" {
					fail("%s: target %s: no expr", where, t.RefID)
					continue
				}
				if _, err := inventory.Check(substitute(t.Expr)); err != nil {
					fail("%s: target %s: %v", where, t.RefID, err)
				}
			}
		}
	}
	check(b.Panels)
	return errs
}

func overlap(a, b gridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

// datasourceRefs walks the whole document: every datasource reference must
// be the Prometheus data source chosen in the ${datasource} variable, never
// a uid of one particular Grafana.
func datasourceRefs(v any, path string) []error {
	var errs []error
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := path + "." + k
			if k == "datasource" {
				ref, ok := child.(map[string]any)
				if !ok {
					errs = append(errs, fmt.Errorf("%s: a datasource must be {\"type\":\"prometheus\",\"uid\":%q}, not %v", p, datasourceVar, child))
					continue
				}
				if ref["type"] != "prometheus" || (ref["uid"] != datasourceVar && ref["uid"] != "$datasource") {
					errs = append(errs, fmt.Errorf("%s: datasource %v is hard-coded; use {\"type\":\"prometheus\",\"uid\":%q}", p, child, datasourceVar))
				}
				continue
			}
			errs = append(errs, datasourceRefs(child, p)...)
		}
	case []any:
		for i, child := range v {
			errs = append(errs, datasourceRefs(child, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$`)

func checkVariables(b board) []error {
	var errs []error
	var haveDatasource, haveScope bool
	for _, v := range b.Templating.List {
		switch {
		case v.Type == "datasource":
			var q string
			_ = json.Unmarshal(v.Query, &q)
			if v.Name == "datasource" && q == "prometheus" {
				haveDatasource = true
			}
		case v.Type == "query":
			if v.Name == "namespace" || v.Name == "instance" || strings.Contains(v.Name, "target") {
				haveScope = true
			}
			q := variableQuery(v.Query)
			m := labelValues.FindStringSubmatch(q)
			if m == nil {
				errs = append(errs, fmt.Errorf("variable %s: query %q is not label_values(<selector>, <label>), so its metric cannot be checked", v.Name, q))
				continue
			}
			if _, err := inventory.Check(substitute(m[1])); err != nil {
				errs = append(errs, fmt.Errorf("variable %s: %w", v.Name, err))
			}
		}
	}
	if !haveDatasource {
		errs = append(errs, errors.New(`no variable "datasource" of type datasource with query "prometheus"`))
	}
	if !haveScope {
		errs = append(errs, errors.New("no namespace, instance or target variable"))
	}
	return errs
}

// variableQuery reads a query variable's query, a string or Grafana's
// {"query": "..."} object.
func variableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &obj)
	return obj.Query
}

func checkLinks(b board) []error {
	var errs []error
	runbooks := 0
	for _, l := range b.Links {
		page, ok := strings.CutPrefix(l.URL, runbookURLPrefix)
		if !ok {
			continue
		}
		runbooks++
		if _, err := os.Stat(filepath.Join(runbookDir, page)); err != nil {
			errs = append(errs, fmt.Errorf("link %q points at a runbook that does not exist: %v", l.Title, err))
		}
	}
	if runbooks == 0 {
		errs = append(errs, fmt.Errorf("no link to a runbook (%s<AlertName>.md)", runbookURLPrefix))
	}
	return errs
}

func TestDashboards(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"warden-auth.json", "warden-certificates.json", "warden-datastores.json", "warden-remediation.json"}
	for _, w := range want {
		found := false
		for _, f := range files {
			found = found || f == w
		}
		if !found {
			t.Errorf("dashboard %s is missing", w)
		}
	}
	uids := map[string]string{}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range checkDashboard(f, raw) {
				t.Error(err)
			}
			var b board
			if err := json.Unmarshal(raw, &b); err == nil {
				if prev, dup := uids[b.UID]; dup {
					t.Errorf("uid %q is also used by %s", b.UID, prev)
				}
				uids[b.UID] = f
			}
		})
	}
}

func TestSubstitute(t *testing.T) {
	tests := []struct{ in, want string }{
		{`rate(x_total{a=~"$namespace"}[$__rate_interval])`, `rate(x_total{a=~"x"}[5m])`},
		{`rate(x_total{a=~"${namespace}"}[$__interval])`, `rate(x_total{a=~"x"}[5m])`},
		{`increase(x_total{a=~"${instance:regex}"}[$__range])`, `increase(x_total{a=~"x"}[5m])`},
		{`x{a="${var:pipe}", b="$b"} * $__range_s`, `x{a="x", b="x"} * 300`},
		{`label_replace(x, "d", "$1", "job", "(.+)")`, `label_replace(x, "d", "$1", "job", "(.+)")`},
	}
	for _, tt := range tests {
		if got := substitute(tt.in); got != tt.want {
			t.Errorf("substitute(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestCheckDashboardFindsProblems feeds the checks broken dashboards; each
// must be caught, so the real dashboards passing means something.
func TestCheckDashboardFindsProblems(t *testing.T) {
	raw, err := os.ReadFile("warden-auth.json")
	if err != nil {
		t.Fatal(err)
	}
	good := string(raw)
	if errs := checkDashboard("warden-auth.json", raw); len(errs) != 0 {
		t.Fatalf("warden-auth.json must be clean to serve as the base: %v", errs)
	}
	firstExpr := regexp.MustCompile(`"expr": "sum\(job:auth_requests:rate5m`)
	tests := []struct {
		name    string
		mutate  func(string) string
		wantErr string
	}{
		{"misspelt metric", func(s string) string {
			return firstExpr.ReplaceAllString(s, `"expr": "sum(job:auth_request:rate5m`)
		}, `metric "job:auth_request:rate5m" is not produced`},
		{"rate of a gauge", func(s string) string {
			return strings.Replace(s, `"sum(auth_active_sessions{namespace=~\"$namespace\", instance=~\"$instance\"})"`,
				`"sum(rate(auth_active_sessions{namespace=~\"$namespace\", instance=~\"$instance\"}[$__rate_interval]))"`, 1)
		}, `rate() applied to gauge "auth_active_sessions"`},
		{"syntax error", func(s string) string {
			return firstExpr.ReplaceAllString(s, `"expr": "sum(sum(job:auth_requests:rate5m`)
		}, "parse"},
		{"hard-coded datasource uid", func(s string) string {
			return strings.Replace(s, `"uid": "${datasource}"`, `"uid": "P1809F7CD0C75ACF3"`, 1)
		}, "hard-coded"},
		{"unit missing", func(s string) string {
			return strings.Replace(s, `"unit": "reqps"`, `"decimals": 1`, 1)
		}, "unit is not set"},
		{"unknown unit", func(s string) string {
			return strings.Replace(s, `"unit": "reqps"`, `"unit": "req/s"`, 1)
		}, "not a Grafana unit id"},
		{"unknown field", func(s string) string {
			return strings.Replace(s, `"schemaVersion": 39`, `"schemaVersion": 39, "__requires": []`, 1)
		}, "Grafana schema"},
		{"required panel option missing", func(s string) string {
			return strings.Replace(s, `"wideLayout": true,`, ``, 1)
		}, "wideLayout"},
		{"unknown query field", func(s string) string {
			return strings.Replace(s, `"editorMode": "code",`, `"editorMode": "code", "exprr": "up",`, 1)
		}, "Grafana schema"},
		{"duplicate panel id", func(s string) string {
			return strings.Replace(s, `"id": 2,`, `"id": 1,`, 1)
		}, "is also used by"},
		{"overlapping panels", func(s string) string {
			return strings.Replace(s, `"x": 4,`, `"x": 2,`, 1)
		}, "overlaps"},
		{"unstable uid", func(s string) string {
			return strings.Replace(s, `"uid": "warden-auth"`, `"uid": "abc123"`, 1)
		}, "stable uid"},
		{"old schema", func(s string) string {
			return strings.Replace(s, `"schemaVersion": 39`, `"schemaVersion": 27`, 1)
		}, "schemaVersion 27"},
		{"runbook that does not exist", func(s string) string {
			return strings.Replace(s, `runbooks/HighErrorRate.md`, `runbooks/HighErorRate.md`, 1)
		}, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := tt.mutate(good)
			if bad == good {
				t.Fatal("the mutation changed nothing; the base dashboard changed")
			}
			errs := checkDashboard("warden-auth.json", []byte(bad))
			for _, err := range errs {
				if strings.Contains(err.Error(), tt.wantErr) {
					return
				}
			}
			t.Fatalf("no error containing %q; got %v", tt.wantErr, errs)
		})
	}
}
