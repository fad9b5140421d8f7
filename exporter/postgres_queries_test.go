package exporter

import (
	"os"
	"strings"
	"testing"
)

// TestParseConfigPostgresQueries checks that the exporter's file decodes
// the postgres section's custom queries strictly and validates them with
// errors that name the field: the example configuration loads, and a bad
// query is refused.
func TestParseConfigPostgresQueries(t *testing.T) {
	raw, err := os.ReadFile("../deploy/examples/warden-exporter.queries.yml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARDEN_PG_PASSWORD", "unused")
	cfg, err := ParseConfig(raw)
	if err != nil {
		t.Fatalf("example configuration: %v", err)
	}
	if n := len(cfg.Postgres[0].Queries); n != 3 {
		t.Errorf("%d queries decoded, want 3", n)
	}
	// Targets share one exposition: a metric two of them define must agree.
	two := func(labels string) string {
		return `postgres:
- name: a
  dsn: postgres://mon@db1/app
  queries: [{name: q, sql: SELECT 1, labels: [l], metrics: [{column: v, name: app_v, type: gauge}]}]
- name: b
  dsn: postgres://mon@db2/app
  queries: [{name: q, sql: SELECT 2, labels: ` + labels + `, metrics: [{column: v, name: app_v, type: gauge}]}]
`
	}
	if _, err := ParseConfig([]byte(two("[l]"))); err != nil {
		t.Errorf("the same metric in two targets: %v", err)
	}
	if _, err := ParseConfig([]byte(two("[l, m]"))); err == nil || !strings.Contains(err.Error(), `postgres[1].queries[0].metrics[0].name: "app_v" is also defined by postgres[0].queries[0].metrics[0]`) {
		t.Errorf("two definitions of app_v: error = %v", err)
	}

	for _, tc := range []struct{ name, yaml, wantErr string }{
		{"unknown field", "    labls: [a]\n", "field labls not found"},
		{"built-in name", "    metrics: [{column: v, name: pg_up, type: gauge}]\n", `postgres[0].queries[0].metrics[0].name: "pg_up" is a built-in metric`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := "postgres:\n- name: main\n  dsn: postgres://mon@db/app\n  queries:\n  - name: q\n    sql: SELECT 1 AS v\n" + tc.yaml
			if !strings.Contains(tc.yaml, "metrics") {
				yml += "    metrics: [{column: v, name: app_v, type: gauge}]\n"
			}
			_, err := ParseConfig([]byte(yml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
