package report

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/warden-sre/warden/internal/inventory"
)

// notInInventory are series the reports read that internal/inventory does
// not list yet: Prometheus writes ALERTS for every alerting rule, and
// cAdvisor exports container_cpu_usage_seconds_total beside the
// container_memory_working_set_bytes the inventory already has.
var notInInventory = map[string]bool{
	"ALERTS":                            true,
	"container_cpu_usage_seconds_total": true,
}

// reportQuery is one PromQL expression of a report's check.
type reportQuery struct {
	kind    Kind
	section string
	check   Check
	query   string
}

// allQueries lists every expression of every report, with the default
// options; withProducers adds the checks' producer metrics.
func allQueries(t *testing.T, withProducers bool) []reportQuery {
	t.Helper()
	var out []reportQuery
	for _, kind := range Kinds {
		def, err := Define(kind, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range def.Sections {
			for _, c := range s.Checks {
				queries := c.Queries()
				if withProducers && c.Producer != "" {
					queries = append(queries, c.Producer)
				}
				for _, q := range queries {
					out = append(out, reportQuery{kind: kind, section: s.Title, check: c, query: q})
				}
			}
		}
	}
	return out
}

// TestEveryQueryUsesKnownMetrics parses every expression of every report
// and checks its metric names against the inventory (and counter-only
// functions against metric types), so a misspelt or removed metric fails
// here rather than as "no data" in a report.
func TestEveryQueryUsesKnownMetrics(t *testing.T) {
	for _, rq := range allQueries(t, true) {
		t.Run(string(rq.kind)+"/"+rq.check.Title, func(t *testing.T) {
			if _, err := inventory.Check(rq.query); err != nil {
				if rest := unexpected(err); len(rest) > 0 {
					t.Errorf("%s / %s: %v", rq.section, rq.check.Title, errors.Join(rest...))
				}
			}
			names, err := inventory.MetricNames(rq.query)
			if err != nil {
				t.Fatal(err)
			}
			if len(names) == 0 {
				t.Errorf("%s / %s: %q reads no metric", rq.section, rq.check.Title, rq.query)
			}
		})
	}
}

// unexpected drops the inventory's complaints about the names in
// notInInventory and returns the rest.
func unexpected(err error) []error {
	var leaves []error
	var walk func(error)
	walk = func(e error) {
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			if inner := u.Unwrap(); inner != nil {
				walk(inner)
				return
			}
			leaves = append(leaves, e)
		default:
			leaves = append(leaves, e)
		}
	}
	walk(err)
	var out []error
	for _, e := range leaves {
		allowed := false
		for name := range notInInventory {
			if strings.HasPrefix(e.Error(), `metric "`+name+`" is not produced`) {
				allowed = true
			}
		}
		if !allowed {
			out = append(out, e)
		}
	}
	return out
}

func TestUnknownReportKindIsAnError(t *testing.T) {
	if _, err := Define("yearly", Options{}); err == nil || !strings.Contains(err.Error(), "daily, weekly, monthly, security") {
		t.Fatalf("Define(yearly) error = %v; want one naming the reports", err)
	}
}

func TestUnexpectedKeepsOnlyUnlistedComplaints(t *testing.T) {
	_, err := inventory.Check(`ALERTS + no_such_metric + rate(pg_up[5m])`)
	if err == nil {
		t.Fatal("inventory.Check accepted an unknown metric")
	}
	got := unexpected(err)
	if len(got) != 2 || !strings.Contains(errors.Join(got...).Error(), "no_such_metric") || !strings.Contains(errors.Join(got...).Error(), "rate() applied to gauge") {
		t.Fatalf("unexpected(%v) = %v; want the complaints about no_such_metric and rate(pg_up) only", err, got)
	}
}

// TestDocsListEveryQuery keeps docs/report.md's PromQL tables and the
// definitions identical.
func TestDocsListEveryQuery(t *testing.T) {
	raw, err := os.ReadFile("../../docs/report.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, rq := range allQueries(t, false) {
		// Inside a Markdown table a pipe is escaped.
		if want := "`" + strings.ReplaceAll(rq.query, "|", `\|`) + "`"; !strings.Contains(string(raw), want) {
			t.Errorf("docs/report.md lacks the %s report's %q query %s", rq.kind, rq.check.Title, want)
		}
	}
}
