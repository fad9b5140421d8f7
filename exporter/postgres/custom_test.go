package postgres

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/secret"
	"github.com/warden-sre/warden/internal/testenv"
)

// pgCustomStateOf returns the state of query name in database db.
func pgCustomStateOf(t testing.TB, c *Collector, name, db string) *pgCustomState {
	t.Helper()
	for _, s := range c.custom[db] {
		if s.q.cfg.Name == name {
			return s
		}
	}
	t.Fatalf("no custom query %q in database %q", name, db)
	return nil
}

func (s *pgCustomState) lastError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// pgQueryTarget decodes and validates a target with the given queries
// section, as the exporter reads its file.
func pgQueryTarget(t testing.TB, dsn, extra, queries string) Target {
	t.Helper()
	targets, err := parseTargets(fmt.Sprintf("postgres:\n- name: test\n  dsn: %q\n%s  queries:\n%s", dsn, extra, queries))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return targets[0]
}

// TestPostgresCustomQueries runs one collector with several custom queries
// against a real server: each case checks what one query reports, and
// that the built-in metrics and pg_up are unaffected by the ones that fail.
func TestPostgresCustomQueries(t *testing.T) {
	pg := sharedPG.Get(t)
	db, dsn := pgFreshDatabase(t, pg)
	pgExec(t, pg, db,
		"CREATE TABLE accounts (id int PRIMARY KEY, state text)",
		"INSERT INTO accounts SELECT g, CASE WHEN g % 3 = 0 THEN 'locked' ELSE 'active' END FROM generate_series(1, 30) g",
		"CREATE SEQUENCE ticket")
	target := pgQueryTarget(t, dsn, "", `
  - name: accounts_by_state
    sql: SELECT state, count(*) AS accounts, sum(id) AS id_sum FROM accounts GROUP BY state
    labels: [state]
    metrics:
    - {column: accounts, name: app_accounts, type: gauge, help: Accounts by state.}
    - {column: id_sum, name: app_account_ids_total, type: counter}
  - name: slow
    sql: SELECT 1 AS v FROM pg_sleep(30)
    timeout: 200ms
    metrics: [{column: v, name: app_slow, type: gauge}]
  - name: insert
    sql: INSERT INTO accounts VALUES (1000, 'evil') RETURNING id AS v
    metrics: [{column: v, name: app_insert, type: gauge}]
  - name: insert_cte
    sql: WITH w AS (INSERT INTO accounts VALUES (1001, 'evil') RETURNING id) SELECT id AS v FROM w
    metrics: [{column: v, name: app_insert_cte, type: gauge}]
  - name: create
    sql: CREATE TABLE evil (id int)
    metrics: [{column: v, name: app_create, type: gauge}]
  - name: sequence
    sql: SELECT nextval('ticket') AS v
    metrics: [{column: v, name: app_sequence, type: gauge}]
  - name: escape
    sql: SELECT 1 AS v; COMMIT; INSERT INTO accounts VALUES (1002, 'evil')
    metrics: [{column: v, name: app_escape, type: gauge}]
  - name: future
    sql: SELECT 1 AS v
    min_server_version: 99
    metrics: [{column: v, name: app_future, type: gauge}]
  - name: past
    sql: SELECT 1 AS v
    max_server_version: 12
    metrics: [{column: v, name: app_past, type: gauge}]
  - name: capped
    sql: SELECT g::text AS n, g AS v FROM generate_series(1, 10) g
    labels: [n]
    max_series: 3
    metrics: [{column: v, name: app_capped, type: gauge}]
  - name: duplicate_labels
    sql: SELECT 'x' AS k, 1 AS v UNION ALL SELECT 'x', 2
    labels: [k]
    metrics: [{column: v, name: app_duplicate, type: gauge}]
  - name: not_a_number
    sql: SELECT 'seven'::text AS v
    metrics: [{column: v, name: app_text, type: gauge}]
  - name: nulls
    sql: SELECT NULL::int AS v, 2.5::numeric AS w, true AS b
    metrics:
    - {column: v, name: app_null, type: gauge}
    - {column: w, name: app_numeric, type: gauge}
    - {column: b, name: app_bool, type: gauge}
`)
	c := newTestPostgresCollector(t, target, nil)
	mfs, err := pgCollect(t, c, 20*time.Second)
	if err != nil {
		t.Fatalf("collect: %v (a custom query's failure must not fail the collector)", err)
	}
	if v, ok := pgValue(mfs, "pg_up", nil); !ok || v != 1 {
		t.Fatalf("pg_up = %v, want 1", v)
	}
	if _, ok := pgValue(mfs, "pg_stat_database_numbackends", map[string]string{"datname": db}); !ok {
		t.Error("built-in per-database metrics missing")
	}
	if n := pgSeriesCount(mfs, "pg_stat_user_tables_size_bytes"); n == 0 {
		t.Error("built-in per-table metrics missing")
	}

	success := func(query string) (float64, bool) {
		return pgValue(mfs, "warden_postgres_custom_query_success", map[string]string{"query": query, "datname": db})
	}
	for _, tc := range []struct {
		query string
		// wantSuccess is 1 or 0; -1 means no success series (skipped).
		wantSuccess float64
		wantErr     string
		check       func(t *testing.T)
	}{
		{query: "accounts_by_state", wantSuccess: 1, check: func(t *testing.T) {
			for state, want := range map[string]float64{"active": 20, "locked": 10} {
				if v, ok := pgValue(mfs, "app_accounts", map[string]string{"target": "test", "datname": db, "state": state}); !ok || v != want {
					t.Errorf("app_accounts{state=%q} = %v (%v), want %v", state, v, ok, want)
				}
			}
			if v, ok := pgValue(mfs, "app_account_ids_total", map[string]string{"state": "locked"}); !ok || v != 165 {
				t.Errorf("app_account_ids_total{state=locked} = %v, want 165", v)
			}
			if mf := mfs["app_account_ids_total"]; mf == nil || mf.GetType() != dto.MetricType_COUNTER {
				t.Errorf("app_account_ids_total is not a counter: %v", mf)
			}
			if mf := mfs["app_accounts"]; mf == nil || mf.GetHelp() != "Accounts by state." {
				t.Errorf("help not taken from the configuration: %v", mf)
			}
			if v, ok := pgValue(mfs, "warden_postgres_custom_query_age_seconds", map[string]string{"query": "accounts_by_state"}); !ok || v > 5 {
				t.Errorf("age = %v (%v), want a fresh value", v, ok)
			}
			if _, ok := pgValue(mfs, "warden_postgres_custom_query_duration_seconds", map[string]string{"query": "accounts_by_state"}); !ok {
				t.Error("duration missing")
			}
		}},
		{query: "slow", wantSuccess: 0, wantErr: "statement timeout", check: func(t *testing.T) {
			if d, _ := pgValue(mfs, "warden_postgres_custom_query_duration_seconds", map[string]string{"query": "slow"}); d >= 20 {
				t.Errorf("slow query ran %vs, past its 200ms timeout", d)
			}
		}},
		{query: "insert", wantSuccess: 0, wantErr: "read-only transaction"},
		{query: "insert_cte", wantSuccess: 0, wantErr: "read-only transaction"},
		{query: "create", wantSuccess: 0, wantErr: "read-only transaction"},
		{query: "sequence", wantSuccess: 0, wantErr: "read-only transaction"},
		{query: "escape", wantSuccess: 0, wantErr: "multiple commands"},
		{query: "future", wantSuccess: -1},
		{query: "past", wantSuccess: -1},
		{query: "capped", wantSuccess: 1, check: func(t *testing.T) {
			if n := pgSeriesCount(mfs, "app_capped"); n != 3 {
				t.Errorf("%d series, want max_series 3", n)
			}
			if v, _ := pgValue(mfs, "warden_postgres_custom_query_series_dropped", map[string]string{"query": "capped"}); v != 7 {
				t.Errorf("dropped = %v, want 7", v)
			}
		}},
		{query: "duplicate_labels", wantSuccess: 0, wantErr: "same label values"},
		{query: "not_a_number", wantSuccess: 0, wantErr: `metric column "v" is not a number`},
		{query: "nulls", wantSuccess: 1, check: func(t *testing.T) {
			if _, ok := mfs["app_null"]; ok {
				t.Error("a NULL value gave a sample")
			}
			if v, _ := pgValue(mfs, "app_numeric", nil); v != 2.5 {
				t.Errorf("numeric = %v, want 2.5", v)
			}
			if v, _ := pgValue(mfs, "app_bool", nil); v != 1 {
				t.Errorf("bool = %v, want 1", v)
			}
		}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			v, ok := success(tc.query)
			switch {
			case tc.wantSuccess < 0 && ok:
				t.Errorf("success series present for a skipped query")
			case tc.wantSuccess >= 0 && (!ok || v != tc.wantSuccess):
				t.Errorf("success = %v (%v), want %v; last error %q", v, ok, tc.wantSuccess, pgCustomStateOf(t, c, tc.query, db).lastError())
			}
			if tc.wantSuccess != 1 {
				if _, ok := pgValue(mfs, "warden_postgres_custom_query_age_seconds", map[string]string{"query": tc.query}); ok {
					t.Error("age reported without values")
				}
			}
			if got := pgCustomStateOf(t, c, tc.query, db).lastError(); !strings.Contains(got, tc.wantErr) || (tc.wantErr == "") != (got == "") {
				t.Errorf("error %q, want %q", got, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}

	// Nothing was written, and the connection is back to no transaction
	// (the next scrape works the same).
	var n int
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM accounts WHERE id >= 1000").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows written: %d (%v)", n, err)
	}
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass('evil') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Errorf("table created: %v (%v)", exists, err)
	}
	if err := conn.QueryRow(t.Context(), "SELECT last_value FROM ticket").Scan(&n); err != nil || n != 1 {
		t.Errorf("sequence moved: last_value %d (%v)", n, err)
	}
	mfs, err = pgCollect(t, c, 20*time.Second)
	if err != nil {
		t.Fatalf("second collect: %v", err)
	}
	if v, ok := success("accounts_by_state"); !ok || v != 1 {
		t.Errorf("second scrape: success = %v (%v)", v, ok)
	}
}

// TestPostgresCustomQueryMinIntervalServesCachedValue checks that a query
// runs at most once per min_interval: scrapes in between serve the value
// read first, with its growing age, while a query without an interval
// reads afresh.
func TestPostgresCustomQueryMinIntervalServesCachedValue(t *testing.T) {
	pg := sharedPG.Get(t)
	db, dsn := pgFreshDatabase(t, pg)
	pgExec(t, pg, db, "CREATE TABLE events (id int)", "INSERT INTO events VALUES (1)")
	target := pgQueryTarget(t, dsn, "", `
  - name: cached
    sql: SELECT count(*) AS n FROM events
    min_interval: 1h
    metrics: [{column: n, name: app_events_cached, type: gauge}]
  - name: fresh
    sql: SELECT count(*) AS n FROM events
    metrics: [{column: n, name: app_events_fresh, type: gauge}]
`)
	c := newTestPostgresCollector(t, target, nil)
	value := func(mfs map[string]*dto.MetricFamily, name string) float64 {
		t.Helper()
		v, ok := pgValue(mfs, name, nil)
		if !ok {
			t.Fatalf("%s missing", name)
		}
		return v
	}
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := value(mfs, "app_events_cached"); v != 1 {
		t.Fatalf("first scrape: cached = %v, want 1", v)
	}
	pgExec(t, pg, db, "INSERT INTO events VALUES (2), (3)")
	// Poll until the age has visibly grown; every scrape in between must
	// still serve the first value.
	var last string
	testenv.WaitFor(t, 30*time.Second, "the cached value's age to grow", func() bool {
		mfs, err := pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v := value(mfs, "app_events_fresh"); v != 3 {
			t.Fatalf("fresh = %v, want 3", v)
		}
		if v := value(mfs, "app_events_cached"); v != 1 {
			t.Fatalf("cached = %v, want the first scrape's 1 until min_interval passes", v)
		}
		if s, _ := pgValue(mfs, "warden_postgres_custom_query_success", map[string]string{"query": "cached"}); s != 1 {
			t.Fatalf("cached query success = %v between runs", s)
		}
		age, _ := pgValue(mfs, "warden_postgres_custom_query_age_seconds", map[string]string{"query": "cached", "datname": db})
		freshAge, _ := pgValue(mfs, "warden_postgres_custom_query_age_seconds", map[string]string{"query": "fresh", "datname": db})
		last = fmt.Sprintf("age %v, fresh age %v", age, freshAge)
		return age > 0.2 && freshAge < age
	})
	t.Log(last)

	// Once min_interval has passed, the next scrape reads again.
	s := pgCustomStateOf(t, c, "cached", db)
	s.mu.Lock()
	s.nextRun = time.Now().Add(-time.Second)
	s.mu.Unlock()
	mfs, err = pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := value(mfs, "app_events_cached"); v != 3 {
		t.Errorf("after min_interval: cached = %v, want 3", v)
	}
}

// TestPostgresCustomQueryInListedDatabaseSharesItsConnection checks that
// a query listed for another database runs there, on that database's
// connection, and that the collector never holds more than
// max_connections while doing so.
func TestPostgresCustomQueryInListedDatabaseSharesItsConnection(t *testing.T) {
	pg := sharedPG.Get(t)
	dbA, dsnA := pgFreshDatabase(t, pg)
	dbB, _ := pgFreshDatabase(t, pg)
	pgExec(t, pg, dbB, "CREATE TABLE only_in_b (id int)", "INSERT INTO only_in_b SELECT generate_series(1, 4)")
	target := pgQueryTarget(t, dsnA, fmt.Sprintf("  max_connections: 2\n  databases: [%s, %s]\n", dbA, dbB), fmt.Sprintf(`
  - name: rows_b
    sql: SELECT current_database() AS db, count(*) AS n FROM only_in_b
    labels: [db]
    databases: [%s]
    metrics: [{column: n, name: app_rows_b, type: gauge}]
  - name: here
    sql: SELECT current_database() AS db, 1 AS one
    labels: [db]
    databases: [%s, %s]
    metrics: [{column: one, name: app_here, type: gauge}]
`, dbB, dbA, dbB))
	c := newTestPostgresCollector(t, target, nil)
	for range 3 {
		mfs, err := pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := pgValue(mfs, "app_rows_b", map[string]string{"datname": dbB, "db": dbB}); !ok || v != 4 {
			t.Errorf("app_rows_b = %v (%v), want 4 from %s", v, ok, dbB)
		}
		for _, db := range []string{dbA, dbB} {
			if _, ok := pgValue(mfs, "app_here", map[string]string{"datname": db, "db": db}); !ok {
				t.Errorf("app_here missing for %s", db)
			}
		}
		if st := c.pool.Stat(); st.TotalConns() > int32(c.maxConns) {
			t.Errorf("main pool holds %d connections, cap %d", st.TotalConns(), c.maxConns)
		}
		if st := c.extra[0].pool.Stat(); st.TotalConns() > 1 {
			t.Errorf("pool of %s holds %d connections", dbB, st.TotalConns())
		}
	}
	var held int
	conn, err := pgx.Connect(t.Context(), pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = ANY($2)", pgApplicationName, []string{dbA, dbB}).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held > 2 {
		t.Errorf("%d connections held, max_connections is 2", held)
	}
}

// TestPostgresCustomQueryDownServerFailsDueQueries checks that a query
// due while the server does not answer reports failure rather than its
// last values, and that pg_up is 0.
func TestPostgresCustomQueryDownServerFailsDueQueries(t *testing.T) {
	pg := testenv.StartPostgres(t)
	target := pgQueryTarget(t, pg.DSN("postgres"), "  connect_timeout: 500ms\n", `
  - name: one
    sql: SELECT 1 AS v
    metrics: [{column: v, name: app_one, type: gauge}]
`)
	c := newTestPostgresCollector(t, target, nil)
	mfs, _ := pgCollect(t, c, 10*time.Second)
	if v, _ := pgValue(mfs, "app_one", nil); v != 1 {
		t.Fatalf("app_one = %v before the server stops", v)
	}
	pg.Stop()
	mfs, _ = pgCollect(t, c, 5*time.Second)
	if v, _ := pgValue(mfs, "pg_up", nil); v != 0 {
		t.Errorf("pg_up = %v with the server stopped", v)
	}
	if _, ok := mfs["app_one"]; ok {
		t.Error("stale value served for a query that was due")
	}
	if v, ok := pgValue(mfs, "warden_postgres_custom_query_success", map[string]string{"query": "one"}); !ok || v != 0 {
		t.Errorf("success = %v (%v), want 0", v, ok)
	}
}

func TestPostgresQueriesConfig(t *testing.T) {
	const base = "postgres:\n- name: main\n  dsn: postgres://mon@db/app\n"
	t.Run("defaults", func(t *testing.T) {
		targets, err := parseTargets(base + "  queries:\n  - {name: q, sql: SELECT 1 AS v, metrics: [{column: v, name: app_v, type: gauge}]}\n")
		if err != nil {
			t.Fatal(err)
		}
		q := targets[0].Queries[0]
		if q.MaxSeries != pgDefaultQueryMaxSeries || q.Timeout != 0 || q.MinInterval != 0 || q.Databases != nil {
			t.Errorf("defaults: %+v", q)
		}
	})
	t.Run("all fields", func(t *testing.T) {
		targets, err := parseTargets(base + `  databases: [app, other]
  max_connections: 3
  queries:
  - name: q
    sql: SELECT 'a' AS l, 1 AS v, 2 AS w
    labels: [l]
    databases: [app, other]
    timeout: 2s
    min_interval: 5m
    min_server_version: 13
    max_server_version: 17
    max_series: 50
    metrics:
    - {column: v, name: app_v, type: gauge, help: V.}
    - {column: w, name: app_w_total, type: counter}
`)
		if err != nil {
			t.Fatal(err)
		}
		q := targets[0].Queries[0]
		if q.Timeout != 2*time.Second || q.MinInterval != 5*time.Minute || q.MinServerVersion != 13 || q.MaxServerVersion != 17 ||
			q.MaxSeries != 50 || len(q.Metrics) != 2 || q.Metrics[0].Help != "V." || len(q.Databases) != 2 || q.Labels[0] != "l" {
			t.Errorf("got %+v", q)
		}
	})
	metric := func(m string) string {
		return "  queries:\n  - name: q\n    sql: SELECT 1\n    metrics: [" + m + "]\n"
	}
	query := func(fields string) string {
		return "  queries:\n  - name: q\n    sql: SELECT 1\n    metrics: [{column: v, name: app_v, type: gauge}]\n" + fields
	}
	for _, tc := range []struct{ name, yaml, wantErr string }{
		{"unknown query field", query("    interval: 1m\n"), "field interval not found"},
		{"unknown metric field", metric("{column: v, name: app_v, type: gauge, unit: s}"), "field unit not found"},
		{"no name", "  queries:\n  - {sql: SELECT 1, metrics: [{column: v, name: app_v, type: gauge}]}\n", "postgres[0].queries[0].name: \"\" must match"},
		{"bad name", "  queries:\n  - {name: a-b, sql: SELECT 1, metrics: [{column: v, name: app_v, type: gauge}]}\n", "postgres[0].queries[0].name: \"a-b\" must match"},
		{"duplicate name", query("  - {name: q, sql: SELECT 1, metrics: [{column: v, name: app_w, type: gauge}]}\n"), "postgres[0].queries[1].name: \"q\" is already used"},
		{"no sql", "  queries:\n  - {name: q, metrics: [{column: v, name: app_v, type: gauge}]}\n", "postgres[0].queries[0].sql: required"},
		{"no metrics", "  queries:\n  - {name: q, sql: SELECT 1}\n", "postgres[0].queries[0].metrics: at least one"},
		{"bad metric name", metric("{column: v, name: 1app, type: gauge}"), "postgres[0].queries[0].metrics[0].name: \"1app\" is not a valid metric name"},
		{"colon in metric name", metric("{column: v, name: 'app:v', type: gauge}"), "is not a valid metric name"},
		{"built-in name", metric("{column: v, name: pg_up, type: gauge}"), "postgres[0].queries[0].metrics[0].name: \"pg_up\" is a built-in metric"},
		{"built-in table name", metric("{column: v, name: pg_stat_user_tables_size_bytes, type: gauge}"), "is a built-in metric"},
		{"reserved prefix", metric("{column: v, name: warden_postgres_custom_query_success, type: gauge}"), "is a built-in metric"},
		{"reserved prefix warden", metric("{column: v, name: warden_mine, type: gauge}"), "prefix \"warden_\" is reserved"},
		{"reserved prefix go", metric("{column: v, name: go_things, type: gauge}"), "prefix \"go_\" is reserved"},
		{"reserved prefix redis", metric("{column: v, name: redis_things, type: gauge}"), "prefix \"redis_\" is reserved"},
		{"up", metric("{column: v, name: up, type: gauge}"), "\"up\" is a built-in metric"},
		{"reserved suffix", metric("{column: v, name: app_things_count, type: gauge}"), "suffix \"_count\" is reserved"},
		{"counter without _total", metric("{column: v, name: app_things, type: counter}"), "a counter's name must end in _total"},
		{"gauge with _total", metric("{column: v, name: app_things_total, type: gauge}"), "only a counter's name may end in _total"},
		{"no type", metric("{column: v, name: app_v}"), "postgres[0].queries[0].metrics[0].type: required"},
		{"bad type", metric("{column: v, name: app_v, type: histogram}"), "postgres[0].queries[0].metrics[0].type: \"histogram\" is not gauge or counter"},
		{"empty column", metric("{name: app_v, type: gauge}"), "postgres[0].queries[0].metrics[0].column: empty column name"},
		{"same column twice", metric("{column: v, name: app_v, type: gauge}, {column: v, name: app_w, type: gauge}"), "postgres[0].queries[0].metrics[1].column: column \"v\" is already used"},
		{"label is metric column", query("    labels: [v]\n"), "postgres[0].queries[0].metrics[0].column: column \"v\" is already used by postgres[0].queries[0].labels[0]"},
		{"label twice", query("    labels: [l, l]\n"), "postgres[0].queries[0].labels[1]: column \"l\" is already used"},
		{"bad label", query("    labels: [a-b]\n"), "postgres[0].queries[0].labels[0]: \"a-b\" is not a valid label name"},
		{"reserved label", query("    labels: [__name]\n"), "postgres[0].queries[0].labels[0]: \"__name\" is not a valid label name"},
		{"label target", query("    labels: [target]\n"), "postgres[0].queries[0].labels[0]: \"target\" is set by the exporter"},
		{"label datname", query("    labels: [datname]\n"), "postgres[0].queries[0].labels[0]: \"datname\" is set by the exporter"},
		{"metric defined twice", query("  - {name: r, sql: SELECT 1, metrics: [{column: v, name: app_v, type: gauge}]}\n"), "postgres[0].queries[1].metrics[0].name: \"app_v\" is already defined by postgres[0].queries[0].metrics[0]"},
		{"unlisted database", query("    databases: [other]\n"), "postgres[0].queries[0].databases[0]: \"other\" is neither the DSN's database"},
		{"database twice", query("    databases: [app, app]\n"), "postgres[0].queries[0].databases[1]: \"app\" is listed twice"},
		{"negative timeout", query("    timeout: -1s\n"), "postgres[0].queries[0].timeout: must not be negative"},
		{"negative interval", query("    min_interval: -1s\n"), "postgres[0].queries[0].min_interval: must be between"},
		{"huge interval", query("    min_interval: 25h\n"), "postgres[0].queries[0].min_interval: must be between"},
		{"bad version", query("    min_server_version: 140000\n"), "postgres[0].queries[0].min_server_version: a major version"},
		{"versions inverted", query("    min_server_version: 15\n    max_server_version: 14\n"), "postgres[0].queries[0].max_server_version: 14 is below min_server_version 15"},
		{"max_series zero", query("    max_series: 0\n"), "postgres[0].queries[0].max_series: must be between"},
		{"max_series below metrics", metric("{column: v, name: app_v, type: gauge}, {column: w, name: app_w, type: gauge}") + "    max_series: 1\n", "postgres[0].queries[0].max_series: must be between the number of metric columns (2)"},
		{"max_series huge", query("    max_series: 100000\n"), "postgres[0].queries[0].max_series: must be between"},
		{"tables all with top_n", "  tables: {all: true, top_n: 5}\n", "postgres[0].tables.top_n: must be left out with tables.all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTargets(base + tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzPostgresQueriesConfig decodes arbitrary queries sections: decoding
// and validation never panic, and a configuration they accept builds a
// collector whose descriptors are all valid.
func FuzzPostgresQueriesConfig(f *testing.F) {
	f.Add("  - {name: q, sql: SELECT 1 AS v, metrics: [{column: v, name: app_v, type: gauge}]}\n")
	f.Add("  - {name: q, sql: SELECT 1, labels: [a, b], max_series: 7, metrics: [{column: v, name: app_v_total, type: counter, help: \"\\xff\"}]}\n")
	f.Add("  - name: q\n    sql: x\n    min_server_version: 14\n    metrics: [{column: v, name: app_v, type: gauge}]\n")
	f.Add("  - {name: q, sql: SELECT 1, databases: [app], metrics: [{column: v, name: a, type: gauge}, {column: w, name: a, type: gauge}]}\n")
	if b, err := os.ReadFile("../../deploy/examples/warden-exporter.queries.yml"); err == nil {
		if _, q, ok := strings.Cut(string(b), "  queries:\n"); ok {
			f.Add(q)
		}
	}
	f.Fuzz(func(t *testing.T, queries string) {
		targets, err := parseTargets("postgres:\n- name: main\n  dsn: postgres://mon@db/app\n  queries:\n" + queries)
		if err != nil {
			return
		}
		for _, q := range targets[0].Queries {
			cq := newCustomQuery(q)
			for _, d := range cq.descs {
				if d.Err() != nil {
					t.Fatalf("accepted query %q has an invalid descriptor: %v", q.Name, d.Err())
				}
			}
			if cq.maxRows < 1 {
				t.Fatalf("accepted query %q keeps %d rows", q.Name, cq.maxRows)
			}
		}
	})
}

// pgExampleQueries is the example configuration holding the runbook's
// queries.
const pgExampleQueries = "../../deploy/examples/warden-exporter.queries.yml"

// pgExampleTarget is the postgres target of the example configuration.
func pgExampleTarget(t testing.TB) Target {
	t.Helper()
	raw, err := os.ReadFile(pgExampleQueries)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Scrape   map[string]any `yaml:"scrape"`
		Postgres []Target       `yaml:"postgres"`
	}
	if err := exportertest.DecodeStrict(string(raw), &file); err != nil {
		t.Fatal(err)
	}
	return file.Postgres[0]
}

// TestPostgresExampleQueriesRunOnARealServer runs every query of the
// example configuration against a real server with pg_stat_statements, in
// a database shaped like the runbook's, and checks each one's series.
func TestPostgresExampleQueriesRunOnARealServer(t *testing.T) {
	example := pgExampleTarget(t)
	pg := sharedPG.Get(t)
	db, dsn := pgFreshDatabase(t, pg)
	pgExec(t, pg, db,
		"CREATE EXTENSION pg_stat_statements",
		"CREATE TABLE sessions (id int PRIMARY KEY, user_id text)",
		"INSERT INTO sessions SELECT g, 'u' || g FROM generate_series(1, 2000) g",
		"CREATE TABLE tokens (id int)",
		"CREATE SCHEMA audit",
		"CREATE TABLE audit.log (id int)",
		"SELECT count(*) FROM sessions s1 JOIN sessions s2 USING (user_id)")
	target := example
	target.DSN, target.Password = dsn, secret.Secret{}
	if err := target.Validate("postgres[0]"); err != nil {
		t.Fatal(err)
	}
	if len(target.Queries) != 3 {
		t.Fatalf("%d example queries, want 3", len(target.Queries))
	}

	// An idle session of the runbook's application, for the connections
	// query.
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var user string
	if err := conn.QueryRow(t.Context(), "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}

	c := newTestPostgresCollector(t, target, nil)
	mfs, err := pgCollect(t, c, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		check func(t *testing.T)
	}{
		{"public_table_sizes", func(t *testing.T) {
			sessions, ok := pgValue(mfs, "pg_public_table_size_bytes", map[string]string{"datname": db, "relname": "sessions"})
			tokens, ok2 := pgValue(mfs, "pg_public_table_size_bytes", map[string]string{"relname": "tokens"})
			if !ok || !ok2 || sessions <= tokens {
				t.Errorf("sizes: sessions %v (%v), tokens %v (%v); want both, sessions larger", sessions, ok, tokens, ok2)
			}
			if _, ok := pgValue(mfs, "pg_public_table_size_bytes", map[string]string{"relname": "log"}); ok {
				t.Error("a table outside the public schema is reported")
			}
		}},
		{"slow_statements", func(t *testing.T) {
			if n := pgSeriesCount(mfs, "pg_slow_statement_mean_seconds"); n < 1 || n > 10 {
				t.Errorf("%d slow statements, want 1 to 10", n)
			}
			for _, name := range []string{"pg_slow_statement_calls_total", "pg_slow_statement_seconds_total", "pg_slow_statement_rows_total"} {
				if pgSeriesCount(mfs, name) != pgSeriesCount(mfs, "pg_slow_statement_mean_seconds") {
					t.Errorf("%s: %d series", name, pgSeriesCount(mfs, name))
				}
			}
			if got := pgLabelValues(mfs, "pg_slow_statement_calls_total", "user"); len(got) == 0 || got[0] != user {
				t.Errorf("users %v, want %s", got, user)
			}
		}},
		{"connections", func(t *testing.T) {
			if v, ok := pgValue(mfs, "pg_connections_by_user", map[string]string{"database": db, "user": user, "state": "idle"}); !ok || v < 1 {
				t.Errorf("idle connections of %s in %s = %v (%v), want at least 1", user, db, v, ok)
			}
		}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			if v, ok := pgValue(mfs, "warden_postgres_custom_query_success", map[string]string{"query": tc.query}); !ok || v != 1 {
				t.Fatalf("success = %v (%v); error %q", v, ok, pgCustomStateOf(t, c, tc.query, db).lastError())
			}
			tc.check(t)
		})
	}
}

// TestPostgresCustomQueryClaimIsExclusive checks that of many concurrent
// scrapes finding a query due, exactly one runs it, and that the others
// can run it again only once that run has finished and min_interval passed.
func TestPostgresCustomQueryClaimIsExclusive(t *testing.T) {
	s := &pgCustomState{q: newCustomQuery(Query{Name: "q", MinInterval: time.Hour, MaxSeries: 1, Metrics: []QueryMetric{{Column: "v", Name: "app_v", Type: "gauge"}}})}
	now := time.Now()
	var (
		wg      sync.WaitGroup
		claimed atomic.Int32
	)
	for range 50 {
		wg.Go(func() {
			if s.claim(now, 15) {
				claimed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := claimed.Load(); n != 1 {
		t.Fatalf("%d scrapes claimed the query, want 1", n)
	}
	r := &pgCustomRun{st: s, target: "t", done: true, start: now, end: now}
	r.finish(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if s.claim(now.Add(time.Minute), 15) {
		t.Error("claimed again within min_interval")
	}
	if !s.claim(now.Add(time.Hour+time.Second), 15) {
		t.Error("not claimed once min_interval passed")
	}
	if s.claim(now.Add(2*time.Hour), 15) {
		t.Error("claimed while running")
	}
}

// TestPostgresCustomQueriesAddNoRoundTrip checks that custom queries run
// within the scrape's one pipeline: a warm scrape that runs the example's
// three queries (every scrape) still makes one round trip.
func TestPostgresCustomQueriesAddNoRoundTrip(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, db, 3)
	pgExec(t, sharedPG.Get(t), db, "CREATE EXTENSION pg_stat_statements")
	queries := pgExampleTarget(t).Queries
	for i := range queries {
		queries[i].MinInterval = 0
	}
	var rt pgRoundTripCounter
	c := newTestPostgresCollector(t, Target{DSN: dsn, MaxConnections: 1, Statements: StatementsConfig{Enabled: true}, Queries: queries}, rt.wrap)
	for range 3 { // connect, prepare, discover the extension
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	before := rt.n.Load()
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load() - before; got != 1 {
		t.Errorf("a warm scrape with %d custom queries made %d round trips, want 1", len(queries), got)
	}
	for _, q := range queries {
		age, ok := pgValue(mfs, "warden_postgres_custom_query_age_seconds", map[string]string{"query": q.Name})
		if s, _ := pgValue(mfs, "warden_postgres_custom_query_success", map[string]string{"query": q.Name}); s != 1 || !ok || age > 5 {
			t.Errorf("%s: success %v, age %v (%v): not run by the scrape under count", q.Name, s, age, ok)
		}
	}
}
