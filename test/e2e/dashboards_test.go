package e2e

import (
	"context"
	"maps"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/demo"
	"github.com/warden-sre/warden/internal/testenv"
)

// emptyByDesign lists the panel queries that may return nothing after the
// demo's scenario, by dashboard file, panel title, refId and the variable
// set to one value, each with the reason. Anything else that comes back
// empty is a dashboard or a demo that does not show what it should.
var emptyByDesign = map[string]string{
	"warden-datastores.json / Replication lag / A / pg_target=auth-db":           "a primary has no replication lag: pg_replication_lag_seconds is reported by replicas only",
	"warden-certificates.json / Chain verification / A / source_kind=file":       "chains are verified for endpoints only, which present a chain for a server name; a PEM file or a Secret is just certificates",
	"warden-certificates.json / Chain verification / A / source_kind=kubernetes": "chains are verified for endpoints only, which present a chain for a server name; a PEM file or a Secret is just certificates",
}

// perValue are the variables whose values select different kinds of
// thing (a primary or a replica, a kind of certificate source): besides
// "All", every panel that uses one is queried with each of its values. The
// instances are left at "All": they are copies of one program (two
// simulators, two remediator replicas), and which copy did something in
// the scenario is chance.
var perValue = map[string]bool{"pg_target": true, "redis_target": true, "source_kind": true}

// rateInterval stands for Grafana's $__rate_interval: with the demo's 1 s
// scrapes Grafana would pick a few seconds; a minute is what a person
// looking at the dashboards after the scenario would see at the default
// range, and it still holds several samples of every counter.
const rateInterval = "1m"

// dashboardStep is the resolution of the range queries, as a graph panel
// over a few minutes asks for.
const dashboardStep = 5 * time.Second

// checkDashboardsHaveData queries every panel target of every dashboard
// against the demo's Prometheus over the scenario (start to now, so that a
// rate of something that happened early counts), with the dashboard
// variables set to every value the demo has (what Grafana's "All" shows,
// as a regex of the values) and, for the perValue variables, to each
// value in turn. It fails for every query that returns no sample, unless
// emptyByDesign explains why.
func checkDashboardsHaveData(ctx context.Context, t *testing.T, env *demo.Env, start time.Time) {
	boards, err := env.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	used := map[string]bool{}
	queries, empty := 0, 0
	for _, b := range boards {
		file := filepath.Base(b.File)
		t.Run(file, func(t *testing.T) {
			all := map[string]string{
				"__rate_interval": rateInterval,
				"__interval":      dashboardStep.String(),
				"__range":         strconv.Itoa(int(end.Sub(start).Seconds())) + "s",
				"__range_s":       strconv.Itoa(int(end.Sub(start).Seconds())),
				"__range_ms":      strconv.FormatInt(end.Sub(start).Milliseconds(), 10),
			}
			// One setting with every variable at "All", then one per value
			// of each perValue variable.
			type setting struct {
				name string // "" for All, else variable=value
				vars map[string]string
			}
			var single []setting
			// In the file's order, as Grafana resolves them: a variable's
			// query may use the ones before it.
			for _, v := range b.Variables {
				if v.Type != "query" {
					continue
				}
				m := labelValuesQuery.FindStringSubmatch(v.Query)
				if m == nil {
					t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, v.Query)
					continue
				}
				values, err := env.Prometheus.LabelValues(ctx, m[2], substituteVariables(m[1], all), start, end)
				if err != nil {
					t.Errorf("variable %s: %v", v.Name, err)
					continue
				}
				if len(values) == 0 {
					t.Errorf("variable %s: %s has no values in the demo, so the panels that use it show nothing", v.Name, v.Query)
					all[v.Name] = v.AllValue
					continue
				}
				all[v.Name] = grafanaRegex(values)
				t.Logf("$%s = %s", v.Name, strings.Join(values, ", "))
				if perValue[v.Name] && len(values) > 1 {
					for _, val := range values {
						single = append(single, setting{name: v.Name + "=" + val, vars: map[string]string{v.Name: grafanaRegex([]string{val})}})
					}
				}
			}
			settings := []setting{{vars: all}}
			for _, s := range single {
				vars := maps.Clone(all)
				maps.Copy(vars, s.vars)
				settings = append(settings, setting{name: s.name, vars: vars})
			}
			for _, p := range b.Panels {
				for _, tg := range p.Targets {
					for _, s := range settings {
						key := file + " / " + p.Title + " / " + tg.RefID
						if s.name != "" {
							variable, _, _ := strings.Cut(s.name, "=")
							if !usesVariable(tg.Expr, variable) {
								continue
							}
							key += " / " + s.name
						}
						expr := substituteVariables(tg.Expr, s.vars)
						queries++
						series, err := env.Prometheus.QueryRange(ctx, expr, start, end, dashboardStep)
						if err != nil {
							t.Errorf("%s: %v\n\t%s", key, err, expr)
							continue
						}
						reason, byDesign := emptyByDesign[key]
						if hasSample(series) {
							if byDesign {
								t.Errorf("%s has data, but emptyByDesign says %q: remove it from the list", key, reason)
							}
							continue
						}
						empty++
						if byDesign {
							used[key] = true
							t.Logf("%s: empty by design: %s", key, reason)
							continue
						}
						t.Errorf("%s: no data over the scenario\n\t%s", key, expr)
					}
				}
			}
		})
	}
	for key := range emptyByDesign {
		if !used[key] {
			t.Errorf("emptyByDesign lists %s, which is not an empty panel query", key)
		}
	}
	t.Logf("%d dashboards, %d panel queries, %d empty by design", len(boards), queries, empty)
}

// usesVariable reports whether expr refers to the dashboard variable.
func usesVariable(expr, name string) bool {
	for _, m := range templateVariable.FindAllStringSubmatch(expr, -1) {
		if m[1]+m[2] == name {
			return true
		}
	}
	return false
}

// hasSample reports whether any series has a value Grafana would draw
// (histogram_quantile over no observations gives NaN).
func hasSample(series []testenv.Series) bool {
	for _, s := range series {
		for _, v := range s.Values {
			if !math.IsNaN(v) {
				return true
			}
		}
	}
	return false
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$`)

// templateVariable matches ${name}, ${name:format} and $name; names start
// with a letter or underscore so that label_replace's $1 is left alone.
var templateVariable = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[\w-]+)?\}|\$([A-Za-z_]\w*)`)

// substituteVariables replaces Grafana's variables in a query with their
// values; an unknown variable is left as it is, so the query fails loudly.
func substituteVariables(expr string, vars map[string]string) string {
	return templateVariable.ReplaceAllStringFunc(expr, func(m string) string {
		sub := templateVariable.FindStringSubmatch(m)
		if v, ok := vars[sub[1]+sub[2]]; ok {
			return v
		}
		return m
	})
}

// grafanaRegex is how Grafana writes a multi-value variable into a
// Prometheus regex matcher: the values regex-escaped, joined with |, in
// parentheses, with backslashes doubled for the PromQL string.
func grafanaRegex(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	}
	return "(" + strings.Join(quoted, "|") + ")"
}

func TestSubstituteVariablesWritesGrafanaValues(t *testing.T) {
	vars := map[string]string{"instance": grafanaRegex([]string{"127.0.0.1:9000", "127.0.0.1:9001"}), "__rate_interval": "1m"}
	got := substituteVariables(`rate(x_total{instance=~"$instance", j=~"${instance:regex}"}[$__rate_interval]) + label_replace(y, "a", "$1", "b", "(.*)") + $unknown`, vars)
	want := `rate(x_total{instance=~"(127\\.0\\.0\\.1:9000|127\\.0\\.0\\.1:9001)", j=~"(127\\.0\\.0\\.1:9000|127\\.0\\.0\\.1:9001)"}[1m]) + label_replace(y, "a", "$1", "b", "(.*)") + $unknown`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if m := labelValuesQuery.FindStringSubmatch(`label_values(pg_up{instance=~"$instance"}, target)`); m == nil || m[1] != `pg_up{instance=~"$instance"}` || m[2] != "target" {
		t.Errorf("label_values parsed as %q", m)
	}
	if !usesVariable(`x{a=~"${pg_target:regex}"}`, "pg_target") || usesVariable(`x{a=~"$pg_target_other"}`, "pg_target") {
		t.Error("usesVariable does not tell the variable's uses apart")
	}
}
