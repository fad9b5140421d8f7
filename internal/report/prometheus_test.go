package report

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/warden-sre/warden/internal/testenv"
)

// TestReportsMatchPromQLOnARealPrometheus backfills a month of synthetic
// history into a real Prometheus, builds every report at the end of it and
// checks each number, row and chart point against the same PromQL asked
// directly, that missing metrics are reported as missing, and that the HTML
// is balanced and has its charts. With WARDEN_REPORT_OUT set to a
// directory, the rendered reports are written there for a look.
func TestReportsMatchPromQLOnARealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real Prometheus; skipped with -short")
	}
	data := testenv.Backfill(t, openMetrics())
	prom := testenv.StartPrometheusOnData(t, data)
	client, err := api.NewClient(api.Config{Address: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	papi := v1.NewAPI(client)
	ctx := context.Background()

	reports := map[Kind]*Report{}
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			rep, err := Build(ctx, papi, kind, historyEnd, Options{})
			if err != nil {
				t.Fatalf("Build(%s): %v", kind, err)
			}
			reports[kind] = rep
			var md, h bytes.Buffer
			if err := Markdown(&md, rep); err != nil {
				t.Fatal(err)
			}
			if err := HTML(&h, rep); err != nil {
				t.Fatal(err)
			}
			charts := 0
			for _, s := range rep.Sections {
				for _, res := range s.Results {
					t.Run(s.Title+"/"+res.Title, func(t *testing.T) {
						compareWithDirectPromQL(t, papi, rep, res, md.String())
					})
					if res.Type == Chart && len(res.Series) > 0 {
						charts++
					}
				}
			}
			if charts == 0 {
				t.Errorf("%s report has no chart with data", kind)
			}
			if got := strings.Count(h.String(), "<svg"); got != charts {
				t.Errorf("HTML has %d <svg> elements; want one per chart with data (%d)", got, charts)
			}
			checkHTMLBalanced(t, h.String())
			if dir := os.Getenv("WARDEN_REPORT_OUT"); dir != "" {
				for name, b := range map[string][]byte{string(kind) + ".md": md.Bytes(), string(kind) + ".html": h.Bytes()} {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}

	// What the synthetic history was built to show.
	t.Run("expectations", func(t *testing.T) {
		for kind := range reports {
			if reports[kind] == nil {
				t.Skip("a report failed to build")
			}
		}
		// rowLabels lists a table's rows by label values, sorted: rows with
		// equal values come in label order, and increase() extrapolates
		// counts that are almost equal.
		rowLabels := func(res Result) []string {
			var out []string
			for _, r := range res.Rows {
				out = append(out, strings.Join(r.Labels, "/"))
			}
			sort.Strings(out)
			return out
		}
		cell := func(res Result, labels string, col int) Cell {
			for _, r := range res.Rows {
				if strings.Join(r.Labels, "/") == labels {
					return r.Cells[col]
				}
			}
			t.Fatalf("%s: no row %s in %v", res.Title, labels, rowLabels(res))
			return Cell{}
		}
		near := func(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Abs(want) }

		daily := reports[Daily]
		if got := rowLabels(find(t, daily, "Certificates expiring within 30 days")); strings.Join(got, ",") != "endpoint/auth-service:8443/Example Intermediate/intermediate,endpoint/auth-service:8443/auth.example.com/leaf" {
			t.Errorf("certificates expiring within 30 days = %v; want the 10-day leaf and the 20-day intermediate", got)
		}
		if first := find(t, daily, "Certificates expiring within 30 days").Rows[0]; first.Labels[2] != "auth.example.com" {
			t.Errorf("first certificate = %v; want the one that ends first", first.Labels)
		}
		if c := cell(find(t, daily, "Certificates expiring within 30 days"), "endpoint/auth-service:8443/auth.example.com/leaf", 0); !near(c.Value, 10) {
			t.Errorf("days left = %v; want 10", c.Value)
		}
		if got := rowLabels(find(t, daily, "Alerts that fired")); strings.Join(got, ",") != "AuthServiceTargetDown/critical,PostgresDown/critical" {
			t.Errorf("alerts in 24 h = %v; want the two of the last day, not the one 10 days ago", got)
		}
		if got := rowLabels(find(t, daily, "Actions")); strings.Join(got, ",") != "restart/failed,restart/success" {
			t.Errorf("remediator actions in 24 h = %v; want restart failed and success", got)
		}
		if got := rowLabels(find(t, daily, "Circuit breakers open now")); strings.Join(got, ",") != "rust-security/deployment/auth-service" {
			t.Errorf("open breakers = %v", got)
		}
		if got := rowLabels(find(t, daily, "Filesystems with the least space available")); strings.Contains(strings.Join(got, ","), "/run") {
			t.Errorf("filesystems %v include tmpfs", got)
		}
		if c := cell(find(t, daily, "PostgreSQL"), "main", 1); !(c.Value < 1 && c.Value > 0.9) {
			t.Errorf("PostgreSQL availability over 24 h = %v; want the outage to show", c.Value)
		}

		weekly := reports[Weekly]
		if got := find(t, weekly, "Tokens issued"); got.Missing != "metric jwt_tokens_issued_total not found" {
			t.Errorf("tokens issued: %+v; want missing metric jwt_tokens_issued_total", got)
		}
		if got := find(t, weekly, "Leaf certificates"); strings.Join(rowLabels(got), ",") != "endpoint/auth-service:8443/auth.example.com,kubernetes/rust-security/policy-tls/policy.example.com" {
			t.Errorf("leaf certificates = %v", rowLabels(got))
		} else if c := cell(got, "kubernetes/rust-security/policy-tls/policy.example.com", 1); c.OK {
			t.Errorf("chain verified of a Secret = %+v; want no value (endpoints only)", c)
		}

		monthly := reports[Monthly]
		dbs := find(t, monthly, "Databases")
		size := cell(dbs, "main/auth_service", 0).Value
		if c := cell(dbs, "main/auth_service", 2); !near(c.Value, 10*mib) {
			t.Errorf("growth per day = %v; want 10 MiB", c.Value)
		}
		if c := cell(dbs, "main/auth_service", 3); !near(c.Value, size+300*mib) {
			t.Errorf("forecast = %v; want size + 300 MiB = %v", c.Value, size+300*mib)
		}
		if c := cell(find(t, monthly, "Redis"), "session-cache", 3); c.OK {
			t.Errorf("maxmemory = %+v; want no value, redis_memory_max_bytes is not in the history", c)
		}

		sec := reports[Security]
		if got := rowLabels(find(t, sec, "Pages")); strings.Join(got, ",") != "AuthServiceTargetDown/critical,PostgresDown/critical" {
			t.Errorf("pages = %v; want the critical alerts only", got)
		}
		if got := find(t, sec, "Success rate"); math.Abs(got.Value-2.5/3) > 0.01 {
			t.Errorf("success rate = %v; want about %v", got.Value, 2.5/3)
		}
	})
}

func find(t *testing.T, rep *Report, title string) Result {
	t.Helper()
	for _, s := range rep.Sections {
		for _, r := range s.Results {
			if r.Title == title {
				return r
			}
		}
	}
	t.Fatalf("%s report has no check %q", rep.Kind, title)
	return Result{}
}

// compareWithDirectPromQL asks Prometheus the check's queries itself and
// compares every value with the report's.
func compareWithDirectPromQL(t *testing.T, papi v1.API, rep *Report, res Result, md string) {
	t.Helper()
	if res.Err != "" {
		t.Fatalf("query failed: %s", res.Err)
	}
	ctx := context.Background()
	instant := func(q string) model.Vector {
		v, _, _, err := papi.Query(ctx, q, rep.At)
		if err != nil {
			t.Fatalf("query %q: %v", q, err)
		}
		switch v := v.(type) {
		case model.Vector:
			return v
		case *model.Scalar:
			return model.Vector{{Value: v.Value}}
		}
		t.Fatalf("query %q: %s", q, v.Type())
		return nil
	}
	same := func(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }
	emptyOK := func(n int) {
		if n == 0 && res.Missing == "" && !res.Empty {
			t.Errorf("PromQL returns nothing, but the report is neither missing nor empty: %+v", res)
		}
		if n > 0 && (res.Missing != "" || res.Empty) {
			t.Errorf("PromQL returns %d series, but the report says %q", n, res.Status())
		}
	}
	switch res.Type {
	case Stat:
		vec := instant(res.Query)
		emptyOK(len(vec))
		if len(vec) == 1 {
			if !same(res.Value, float64(vec[0].Value)) {
				t.Errorf("report %v, PromQL %v", res.Value, vec[0].Value)
			}
			if want := "| " + mdEscape(res.Title) + " | " + mdEscape(res.Unit.Format(float64(vec[0].Value))) + " |"; !strings.Contains(md, want) {
				t.Errorf("Markdown lacks %q", want)
			}
		}
		if res.Missing != "" && !strings.Contains(md, mdEscape("no data ("+res.Missing+")")) {
			t.Errorf("Markdown does not say %q", res.Missing)
		}
	case Table:
		for ci, col := range res.Columns {
			vec := instant(col.Query)
			if ci == 0 {
				emptyOK(len(vec))
				if len(vec) != len(res.Rows) {
					t.Errorf("%d rows; PromQL returns %d series", len(res.Rows), len(vec))
				}
			}
			join := col.JoinOn
			if len(join) == 0 {
				join = res.Labels
			}
			want := map[string]float64{}
			for _, s := range vec {
				want[strings.Join(labelValues(s.Metric, join), "/")] = float64(s.Value)
			}
			for _, row := range res.Rows {
				key := strings.Join(pick(res.Labels, row.Labels, join), "/")
				v, ok := want[key]
				if ok != row.Cells[ci].OK || (ok && !same(v, row.Cells[ci].Value)) {
					t.Errorf("column %q row %v: report %+v, PromQL %v (found %v)", col.Header, row.Labels, row.Cells[ci], v, ok)
				}
				if ci == 0 && !strings.Contains(md, mdEscape(res.Columns[0].Unit.Format(v))) {
					t.Errorf("Markdown lacks %q", res.Columns[0].Unit.Format(v))
				}
			}
		}
	case Chart:
		v, _, _, err := papi.QueryRange(ctx, res.Query, v1.Range{Start: rep.At.Add(-rep.Window), End: rep.At, Step: res.Step})
		if err != nil {
			t.Fatalf("query range %q: %v", res.Query, err)
		}
		m := v.(model.Matrix)
		emptyOK(len(m))
		if len(m) != len(res.Series) {
			t.Fatalf("%d series; PromQL returns %d", len(res.Series), len(m))
		}
		for _, s := range m {
			name := strings.Join(labelValues(s.Metric, res.Labels), " ")
			if strings.TrimSpace(name) == "" {
				name = res.Title
			}
			var got Series
			for _, rs := range res.Series {
				if rs.Name == name {
					got = rs
				}
			}
			if len(got.Points) != len(s.Values) {
				t.Fatalf("series %s: %d points; PromQL returns %d", name, len(got.Points), len(s.Values))
			}
			for i, p := range s.Values {
				if !got.Points[i].T.Equal(p.Timestamp.Time()) || !same(got.Points[i].V, float64(p.Value)) {
					t.Errorf("series %s point %d: report %v, PromQL %v", name, i, got.Points[i], p)
				}
			}
		}
	}
}

// pick returns the values of the labels in want, from a row whose label
// columns are names with values.
func pick(names, values, want []string) []string {
	out := make([]string, len(want))
	for i, w := range want {
		for j, n := range names {
			if n == w {
				out[i] = values[j]
			}
		}
	}
	return out
}
