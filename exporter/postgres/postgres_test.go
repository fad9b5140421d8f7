package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/secret"
	"github.com/warden-sre/warden/internal/testenv"
)

// pgCollect runs one Collect with timeout and returns the metric families
// and Collect's error.
func pgCollect(t testing.TB, c exportertest.Collector, timeout time.Duration) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	a := &exportertest.Adapter{C: c, Timeout: timeout}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, a.LastErr()
}

// pgValue returns the value of the series of family name whose labels
// include want, and whether exactly one matched.
func pgValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	var (
		v float64
		n int
	)
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, wv := range want {
			if labels[k] != wv {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		n++
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		}
	}
	return v, n == 1
}

func pgSeriesCount(mfs map[string]*dto.MetricFamily, name string) int {
	if mf := mfs[name]; mf != nil {
		return len(mf.GetMetric())
	}
	return 0
}

// pgLabelValues lists the values of label across the series of name.
func pgLabelValues(mfs map[string]*dto.MetricFamily, name, label string) []string {
	var vals []string
	if mf := mfs[name]; mf != nil {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					vals = append(vals, l.GetValue())
				}
			}
		}
	}
	sort.Strings(vals)
	return vals
}

// newTestPostgresCollector builds a collector for target, with the
// defaults for the fields it leaves zero, and closes it when the test ends.
func newTestPostgresCollector(t testing.TB, target Target, wrap pgDialWrapper) *Collector {
	t.Helper()
	if target.Name == "" {
		target.Name = "test"
	}
	target = withDefaults(target)
	c, err := newWithDial(target, slog.New(slog.NewTextHandler(io.Discard, nil)), wrap)
	if err != nil {
		t.Fatalf("new postgres collector: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// withDefaults fills the fields a test leaves zero from DefaultTarget, as
// decoding a configuration file would.
func withDefaults(t Target) Target {
	d := DefaultTarget()
	if t.MaxConnections == 0 {
		t.MaxConnections = d.MaxConnections
	}
	if t.StatementTimeout == 0 {
		t.StatementTimeout = d.StatementTimeout
	}
	if t.LockTimeout == 0 {
		t.LockTimeout = d.LockTimeout
	}
	if t.ConnectTimeout == 0 {
		t.ConnectTimeout = d.ConnectTimeout
	}
	if t.Tables.TopN == 0 {
		t.Tables.TopN = d.Tables.TopN
	}
	if t.Statements.TopN == 0 {
		t.Statements.TopN = d.Statements.TopN
	}
	return t
}

// parseTargets decodes a configuration file's postgres section and
// validates each target as the exporter does.
func parseTargets(yml string) ([]Target, error) {
	var file struct {
		Postgres []Target `yaml:"postgres"`
	}
	if err := exportertest.DecodeStrict(yml, &file); err != nil {
		return nil, err
	}
	for i := range file.Postgres {
		if err := file.Postgres[i].Validate(fmt.Sprintf("postgres[%d]", i)); err != nil {
			return nil, err
		}
	}
	return file.Postgres, nil
}

// pgFreshDatabase creates a database named after the test.
func pgFreshDatabase(t testing.TB, pg *testenv.Postgres) (string, string) {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = fmt.Sprintf("%s_%d", name, time.Now().UnixNano()%1e6)
	return name, pg.CreateDatabase(t, name)
}

func pgExec(t testing.TB, pg *testenv.Postgres, db string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pg.Exec(ctx, db, sql...); err != nil {
		t.Fatal(err)
	}
}

// pgCreateTables creates n tables t01..tNN where tK holds K*200 rows, so
// that size order is the name order, with autovacuum off so dead tuples
// stay put. then runs in the same session afterwards.
func pgCreateTables(t testing.TB, db string, n int, then ...string) {
	t.Helper()
	var sql []string
	for i := 1; i <= n; i++ {
		sql = append(sql,
			fmt.Sprintf("CREATE TABLE t%02d (id int, pad text) WITH (autovacuum_enabled = false)", i),
			fmt.Sprintf("INSERT INTO t%02d SELECT g, repeat('x', 100) FROM generate_series(1, %d) g", i, i*200))
	}
	pgExec(t, sharedPG.Get(t), db, append(sql, then...)...)
}

func TestPostgresCollectorReportsServerAndDatabase(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	c := newTestPostgresCollector(t, Target{Name: "main", DSN: dsn, Databases: []string{db}}, nil)

	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	// The stable parts, compared as exposition text; the reserved
	// connections are the server's own settings.
	superReserved, reserved := pgReservedSettings(t, sharedPG.Get(t))
	a := &exportertest.Adapter{C: c, Timeout: 10 * time.Second}
	expected := fmt.Sprintf(`
# HELP pg_settings_max_connections The server's max_connections setting.
# TYPE pg_settings_max_connections gauge
pg_settings_max_connections{target="main"} 50
# HELP pg_settings_superuser_reserved_connections The server's superuser_reserved_connections setting.
# TYPE pg_settings_superuser_reserved_connections gauge
pg_settings_superuser_reserved_connections{target="main"} %[2]s
# HELP pg_settings_reserved_connections The server's reserved_connections setting (PostgreSQL 16+); 0 before 16, which has no such setting.
# TYPE pg_settings_reserved_connections gauge
pg_settings_reserved_connections{target="main"} %[3]s
# HELP pg_up Whether the last scrape could query the PostgreSQL server (1) or not (0).
# TYPE pg_up gauge
pg_up{target="main"} 1
# HELP pg_replication_is_replica Whether the server is in recovery, i.e. a replica (1) or a primary (0).
# TYPE pg_replication_is_replica gauge
pg_replication_is_replica{target="main"} 0
# HELP pg_locks_waiting Lock requests waiting to be granted, by the database of the waiting session.
# TYPE pg_locks_waiting gauge
pg_locks_waiting{datname=%[1]q,target="main"} 0
# HELP pg_stat_database_deadlocks_total Deadlocks detected in the database.
# TYPE pg_stat_database_deadlocks_total counter
pg_stat_database_deadlocks_total{datname=%[1]q,target="main"} 0
`, db, superReserved, reserved)
	if err := testutil.CollectAndCompare(a, strings.NewReader(expected),
		"pg_up", "pg_settings_max_connections", "pg_settings_superuser_reserved_connections", "pg_settings_reserved_connections",
		"pg_replication_is_replica", "pg_locks_waiting", "pg_stat_database_deadlocks_total"); err != nil {
		t.Error(err)
	}

	// The scrape's own session is connected to the database.
	if v, ok := pgValue(mfs, "pg_stat_database_numbackends", map[string]string{"target": "main", "datname": db}); !ok || v < 1 {
		t.Errorf("pg_stat_database_numbackends{datname=%q} = %v (found %v), want >= 1", db, v, ok)
	}
	if got := pgLabelValues(mfs, "pg_stat_database_numbackends", "datname"); len(got) != 1 || got[0] != db {
		t.Errorf("numbackends reported for %v, want only the listed %q", got, db)
	}
	if got := pgSeriesCount(mfs, "warden_postgres_activity_connections"); got != len(pgActivityStates) {
		t.Errorf("warden_postgres_activity_connections has %d series, want one per state (%d)", got, len(pgActivityStates))
	}
	if v, ok := pgValue(mfs, "warden_postgres_activity_connections", map[string]string{"datname": db, "state": "active"}); !ok || v < 1 {
		t.Errorf("active sessions in %s = %v (%v), want >= 1 (the scrape itself)", db, v, ok)
	}
	if v, ok := pgValue(mfs, "pg_database_size_bytes", map[string]string{"datname": db}); !ok || v < 1e6 {
		t.Errorf("pg_database_size_bytes = %v (%v), want a real size", v, ok)
	}
	if v, ok := pgValue(mfs, "pg_database_wraparound_age_datfrozenxid", map[string]string{"datname": db}); !ok || v <= 0 {
		t.Errorf("wraparound age = %v (%v)", v, ok)
	}
	if _, ok := pgValue(mfs, "pg_stat_activity_max_tx_duration", map[string]string{"datname": db}); !ok {
		t.Error("pg_stat_activity_max_tx_duration missing")
	}
	if _, ok := pgValue(mfs, "pg_stat_database_xact_commit_total", map[string]string{"datname": db}); !ok {
		t.Error("pg_stat_database_xact_commit_total missing")
	}
	if _, ok := pgValue(mfs, "pg_stat_database_xact_rollback_total", map[string]string{"datname": db}); !ok {
		t.Error("pg_stat_database_xact_rollback_total missing")
	}
	if got := pgLabelValues(mfs, "pg_static", "short_version"); len(got) != 1 || !strings.HasPrefix(got[0], "1") || strings.Count(got[0], ".") != 2 {
		t.Errorf("pg_static short_version = %v", got)
	}
	for _, name := range []string{"pg_replication_lag_seconds", "warden_postgres_wal_receiver_streaming", "warden_postgres_wal_receiver_last_receipt_timestamp_seconds"} {
		if _, ok := mfs[name]; ok {
			t.Errorf("%s reported by a primary", name)
		}
	}
	if _, ok := pgValue(mfs, "pg_stat_bgwriter_checkpoints_timed_total", nil); !ok {
		t.Error("checkpoint counters missing")
	}
}

// pgReservedSettings returns the server's superuser_reserved_connections
// and reserved_connections as SHOW prints them, the latter "0" before
// PostgreSQL 16, which has no such setting.
func pgReservedSettings(t testing.TB, pg *testenv.Postgres) (superReserved, reserved string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versionNum int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SHOW superuser_reserved_connections").Scan(&superReserved); err != nil {
		t.Fatal(err)
	}
	reserved = "0"
	if versionNum >= 160000 {
		if err := conn.QueryRow(ctx, "SHOW reserved_connections").Scan(&reserved); err != nil {
			t.Fatal(err)
		}
	}
	return superReserved, reserved
}

func TestPostgresReservedConnectionsFollowTheServersSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	// Values other than the defaults (3, and 0 before 16), so that a
	// constant in the collector would not pass.
	pg := testenv.StartPostgres(t, testenv.WithPostgresSetting("superuser_reserved_connections", "5"))
	superReserved, reserved := pgReservedSettings(t, pg)
	if superReserved != "5" {
		t.Fatalf("SHOW superuser_reserved_connections = %s, want the 5 the server was started with", superReserved)
	}
	c := newTestPostgresCollector(t, Target{DSN: pg.DSN("postgres")}, nil)
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"pg_settings_superuser_reserved_connections": superReserved,
		"pg_settings_reserved_connections":           reserved,
	} {
		if v, ok := pgValue(mfs, name, nil); !ok || fmt.Sprint(v) != want {
			t.Errorf("%s = %v (present %v), want %s", name, v, ok, want)
		}
	}
}

// TestPostgresReplicaReportsWalReceiverUntilThePrimaryStopsAnswering scrapes
// a real streaming replica: streaming with a recent last receipt, then,
// with the primary frozen (its sessions stay open, so only the receiver's
// timeout notices), not streaming and no receipt since, then streaming
// again once the primary answers.
func TestPostgresReplicaReportsWalReceiverUntilThePrimaryStopsAnswering(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own servers; skipped with -short")
	}
	const receiverTimeout = 5 * time.Second
	// The replica is started with its primary's settings.
	primary := testenv.StartPostgres(t, testenv.WithPostgresSetting("wal_receiver_timeout", fmt.Sprint(receiverTimeout.Milliseconds())))
	// A role without pg_read_all_stats, in the base backup.
	pgExec(t, primary, "postgres", "CREATE ROLE nostats LOGIN")
	replica := testenv.StartPostgresReplica(t, primary)
	c := newTestPostgresCollector(t, Target{Name: "replica", DSN: replica.DSN("postgres")}, nil)

	scrape := func(what string) (streaming float64, streamingOK bool, receipt float64, receiptOK bool) {
		t.Helper()
		mfs, err := pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: collect: %v", what, err)
		}
		if v, _ := pgValue(mfs, "pg_replication_is_replica", nil); v != 1 {
			t.Fatalf("%s: pg_replication_is_replica = %v, want 1", what, v)
		}
		streaming, streamingOK = pgValue(mfs, "warden_postgres_wal_receiver_streaming", nil)
		receipt, receiptOK = pgValue(mfs, "warden_postgres_wal_receiver_last_receipt_timestamp_seconds", nil)
		return streaming, streamingOK, receipt, receiptOK
	}

	started := float64(time.Now().Add(-time.Minute).Unix())
	var firstReceipt float64
	testenv.WaitFor(t, 60*time.Second, "the replica streaming with a last receipt", func() bool {
		streaming, _, receipt, ok := scrape("starting")
		firstReceipt = receipt
		return streaming == 1 && ok
	})
	if now := float64(time.Now().Unix()); firstReceipt < started || firstReceipt > now+1 {
		t.Errorf("last receipt %v, want between %v and now (%v)", firstReceipt, started, now)
	}
	// An idle primary still sends keepalives, which the receipt follows.
	testenv.WaitFor(t, 60*time.Second, "the last receipt to advance", func() bool {
		streaming, _, receipt, _ := scrape("streaming")
		return streaming == 1 && receipt > firstReceipt
	})

	// The receiver's status is hidden from a role without
	// pg_read_all_stats: unknown, so not reported, rather than 0.
	nostats := newTestPostgresCollector(t, Target{Name: "nostats", DSN: fmt.Sprintf("postgres://nostats@%s/postgres?sslmode=disable", replica.Addr())}, nil)
	mfs, err := pgCollect(t, nostats, 10*time.Second)
	if err != nil {
		t.Fatalf("collect as a role without pg_read_all_stats: %v", err)
	}
	if v, _ := pgValue(mfs, "pg_replication_is_replica", nil); v != 1 {
		t.Errorf("without pg_read_all_stats: pg_replication_is_replica = %v, want 1", v)
	}
	for _, name := range []string{"warden_postgres_wal_receiver_streaming", "warden_postgres_wal_receiver_last_receipt_timestamp_seconds"} {
		if v, ok := pgValue(mfs, name, nil); ok {
			t.Errorf("without pg_read_all_stats: %s = %v, want it absent", name, v)
		}
	}

	resume := pgPauseServer(t, primary)
	resumed := false
	defer func() {
		if !resumed {
			resume()
		}
	}()
	var (
		receipt    float64
		receiptOK  bool
		observedAt float64
	)
	testenv.WaitFor(t, 2*time.Minute, "the receiver to leave streaming after the primary froze", func() bool {
		streaming, ok, r, rok := scrape("primary frozen")
		if !ok {
			t.Fatal("primary frozen: warden_postgres_wal_receiver_streaming missing from a replica")
		}
		receipt, receiptOK, observedAt = r, rok, float64(time.Now().Unix())
		return streaming == 0
	})
	// The receiver gave up after wal_receiver_timeout without a message:
	// no receipt since, or none reported at all (no receiver running).
	if receiptOK {
		if age := observedAt - receipt; age < receiverTimeout.Seconds()-1 {
			t.Errorf("not streaming, yet last receipt %v is only %vs before the scrape", receipt, age)
		}
	} else {
		receipt = 0
	}

	resume()
	resumed = true
	testenv.WaitFor(t, 2*time.Minute, "the receiver streaming again after the primary resumed", func() bool {
		streaming, _, r, ok := scrape("primary resumed")
		return streaming == 1 && ok && r > receipt
	})
}

func TestPostgresCollectorReportsAllDatabasesByDefault(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	c := newTestPostgresCollector(t, Target{DSN: dsn}, nil)
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	got := pgLabelValues(mfs, "pg_stat_database_numbackends", "datname")
	for _, want := range []string{"postgres", db} {
		if slices.Index(got, want) < 0 {
			t.Errorf("datnames %v lack %q", got, want)
		}
	}
	for _, tmpl := range []string{"template0", "template1"} {
		if slices.Index(got, tmpl) >= 0 {
			t.Errorf("template database %s reported", tmpl)
		}
	}
}

func TestPostgresTablesTopNPlusOneOverflowSeries(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	// Dead tuples in the largest table (listed) and the smallest (summed
	// into "other"). The deletes run in the session that inserted: when
	// they come from another session, PostgreSQL 15 was seen to keep the
	// inserting session's live count (200) next to the deleting one's dead
	// count, depending on which session's statistics were flushed first.
	pgCreateTables(t, db, 30, "DELETE FROM t30 WHERE id <= 100", "DELETE FROM t01 WHERE id <= 50")

	c := newTestPostgresCollector(t, Target{DSN: dsn, Tables: TablesConfig{TopN: 5}}, nil)
	var mfs map[string]*dto.MetricFamily
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		mfs, err = pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
		top, _ := pgValue(mfs, "pg_stat_user_tables_n_dead_tup", map[string]string{"relname": "t30"})
		other, _ := pgValue(mfs, "pg_stat_user_tables_n_dead_tup", map[string]string{"relname": "other", "schemaname": "other"})
		otherLive, _ := pgValue(mfs, "pg_stat_user_tables_n_live_tup", map[string]string{"relname": "other", "schemaname": "other"})
		// t01..t25 summed, minus the 50 deleted rows.
		if top == 100 && other == 50 && otherLive == 200*325-50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead tuples: t30 = %v, other = %v (want 100 and 50); other live = %v (want %d)\nserver says:\n%s",
				top, other, otherLive, 200*325-50, pgTableStats(t, db))
		}
		time.Sleep(200 * time.Millisecond) // statistics are flushed by the deleting backend within a second
	}

	for _, name := range []string{
		"pg_stat_user_tables_size_bytes", "pg_stat_user_tables_n_live_tup", "pg_stat_user_tables_n_dead_tup",
		"pg_stat_user_tables_last_vacuum_timestamp_seconds", "pg_stat_user_tables_last_autovacuum_timestamp_seconds",
		"pg_stat_user_tables_last_analyze_timestamp_seconds", "pg_stat_user_tables_last_autoanalyze_timestamp_seconds",
	} {
		if got := pgSeriesCount(mfs, name); got != 6 {
			t.Errorf("%s: %d series, want top_n+1 = 6", name, got)
		}
	}
	got := pgLabelValues(mfs, "pg_stat_user_tables_size_bytes", "relname")
	want := []string{"other", "t26", "t27", "t28", "t29", "t30"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("tables = %v, want %v", got, want)
	}
	if got := pgLabelValues(mfs, "pg_stat_user_tables_size_bytes", "datname"); got[0] != db || got[5] != db {
		t.Errorf("datname labels = %v, want %s", got, db)
	}
	// The overflow's size is the sum of the 25 smaller tables: larger than
	// any one of them, i.e. larger than t25 alone, which is below t26.
	other, _ := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"relname": "other"})
	t26, _ := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"relname": "t26"})
	if other <= t26 {
		t.Errorf("other size %v should exceed t26's %v", other, t26)
	}

	// A manual VACUUM shows as a timestamp on the table.
	before := float64(time.Now().Add(-time.Minute).Unix())
	pgExec(t, sharedPG.Get(t), db, "VACUUM t30")
	deadline = time.Now().Add(15 * time.Second)
	for {
		mfs, _ = pgCollect(t, c, 10*time.Second)
		if v, _ := pgValue(mfs, "pg_stat_user_tables_last_vacuum_timestamp_seconds", map[string]string{"relname": "t30"}); v > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("last_vacuum of t30 not reported after VACUUM")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pgTableStats lists the tables' statistics as the server reports them,
// for failure messages.
func pgTableStats(t testing.TB, db string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, sharedPG.Get(t).DSN(db))
	if err != nil {
		return err.Error()
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT relname::text, n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables ORDER BY relname`)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for rows.Next() {
		var (
			name             string
			live, dead, size int64
		)
		if err := rows.Scan(&name, &live, &dead, &size); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "%s live=%d dead=%d size=%d\n", name, live, dead, size)
	}
	return b.String()
}

func TestPostgresTablesFewerThanTopNStillHaveOverflowSeries(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, db, 3)
	c := newTestPostgresCollector(t, Target{DSN: dsn, Tables: TablesConfig{TopN: 5}}, nil)
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := pgLabelValues(mfs, "pg_stat_user_tables_size_bytes", "relname"); strings.Join(got, ",") != "other,t01,t02,t03" {
		t.Errorf("tables = %v", got)
	}
	if v, ok := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"relname": "other"}); !ok || v != 0 {
		t.Errorf("empty overflow = %v (%v), want 0", v, ok)
	}
}

// TestPostgresTablesAllReportsEveryTable checks tables.all: every table
// has its own series, none is summed into "other", and the values are
// those of the ranked query.
func TestPostgresTablesAllReportsEveryTable(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, db, 30, "CREATE SCHEMA audit", "CREATE TABLE audit.log (id int)")
	all := newTestPostgresCollector(t, Target{DSN: dsn, Tables: TablesConfig{All: true}}, nil)
	ranked := newTestPostgresCollector(t, Target{DSN: dsn, Tables: TablesConfig{TopN: 40}}, nil)
	mfs, err := pgCollect(t, all, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"pg_stat_user_tables_size_bytes", "pg_stat_user_tables_n_live_tup", "pg_stat_user_tables_n_dead_tup",
		"pg_stat_user_tables_last_vacuum_timestamp_seconds", "pg_stat_user_tables_last_autovacuum_timestamp_seconds",
		"pg_stat_user_tables_last_analyze_timestamp_seconds", "pg_stat_user_tables_last_autoanalyze_timestamp_seconds",
	} {
		if got := pgSeriesCount(mfs, name); got != 31 {
			t.Errorf("%s: %d series, want 31 (every table, no other)", name, got)
		}
	}
	if _, ok := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"relname": "other"}); ok {
		t.Error("an other series with tables.all")
	}
	if _, ok := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"schemaname": "audit", "relname": "log"}); !ok {
		t.Error("table of another schema missing")
	}
	want, err := pgCollect(t, ranked, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"t01", "t17", "t30"} {
		got, _ := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"relname": rel})
		w, _ := pgValue(want, "pg_stat_user_tables_size_bytes", map[string]string{"relname": rel})
		if got != w || got == 0 {
			t.Errorf("size of %s = %v, the ranked query says %v", rel, got, w)
		}
	}
}

func TestPostgresTablesOfListedDatabasesUseTheirOwnConnection(t *testing.T) {
	dbA, dsnA := pgFreshDatabase(t, sharedPG.Get(t))
	dbB, _ := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, dbA, 2)
	pgExec(t, sharedPG.Get(t), dbB, "CREATE TABLE only_in_b (id int)")
	c := newTestPostgresCollector(t, Target{DSN: dsnA, Databases: []string{dbA, dbB}, MaxConnections: 2, Tables: TablesConfig{TopN: 5}}, nil)
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"datname": dbB, "relname": "only_in_b"}); !ok {
		t.Errorf("table of listed database %s missing", dbB)
	}
	if _, ok := pgValue(mfs, "pg_stat_user_tables_size_bytes", map[string]string{"datname": dbA, "relname": "t02"}); !ok {
		t.Errorf("table of DSN database %s missing", dbA)
	}
	if got := pgSeriesCount(mfs, "pg_stat_user_tables_size_bytes"); got != 2+1+1+1 {
		t.Errorf("%d table series, want 5 (2+other in A, 1+other in B)", got)
	}
	if got := pgLabelValues(mfs, "pg_stat_database_numbackends", "datname"); len(got) != 2 {
		t.Errorf("per-database metrics for %v, want the two listed", got)
	}
}

func TestPostgresStatementsOnlyWhenEnabledAndInstalled(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	// Statements run by the test itself, so that some have a mean time.
	pgExec(t, sharedPG.Get(t), db, "CREATE TABLE s (id int)", "INSERT INTO s SELECT generate_series(1, 1000)", "SELECT pg_sleep(0.01)")

	t.Run("enabled but extension missing", func(t *testing.T) {
		c := newTestPostgresCollector(t, Target{DSN: dsn, Statements: StatementsConfig{Enabled: true, TopN: 5}}, nil)
		mfs, err := pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
		if _, ok := mfs["pg_stat_statements_calls_total"]; ok {
			t.Error("statements reported without the extension")
		}
		if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
			t.Error("pg_up != 1")
		}
	})

	pgExec(t, sharedPG.Get(t), db, "CREATE EXTENSION pg_stat_statements", "SELECT pg_sleep(0.02)", "SELECT count(*) FROM s")

	t.Run("disabled", func(t *testing.T) {
		c := newTestPostgresCollector(t, Target{DSN: dsn}, nil)
		mfs, err := pgCollect(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
		for name := range mfs {
			if strings.Contains(name, "stat_statements") {
				t.Errorf("%s reported while statements are disabled", name)
			}
		}
	})

	t.Run("enabled", func(t *testing.T) {
		c := newTestPostgresCollector(t, Target{DSN: dsn, Statements: StatementsConfig{Enabled: true, TopN: 3}}, nil)
		for scrape := 1; scrape <= 2; scrape++ { // first scrape discovers the extension, second has it in the batch
			mfs, err := pgCollect(t, c, 10*time.Second)
			if err != nil {
				t.Fatalf("scrape %d: %v", scrape, err)
			}
			for _, name := range []string{"pg_stat_statements_calls_total", "pg_stat_statements_seconds_total", "pg_stat_statements_mean_seconds", "pg_stat_statements_rows_total"} {
				if got := pgSeriesCount(mfs, name); got < 1 || got > 3 {
					t.Errorf("scrape %d: %s has %d series, want 1..top_n(3)", scrape, name, got)
				}
			}
			mf := mfs["pg_stat_statements_mean_seconds"]
			if mf == nil {
				t.Fatalf("scrape %d: no statements metrics", scrape)
			}
			for _, m := range mf.GetMetric() {
				var names []string
				for _, l := range m.GetLabel() {
					names = append(names, l.GetName())
					if l.GetName() == "queryid" && (l.GetValue() == "" || strings.ContainsAny(l.GetValue(), " (")) {
						t.Errorf("queryid label %q is not an id", l.GetValue())
					}
					if l.GetName() == "user" && l.GetValue() != "postgres" {
						t.Errorf("user = %q, want postgres", l.GetValue())
					}
				}
				if strings.Join(names, ",") != "datname,queryid,target,user" {
					t.Errorf("labels %v, want datname,queryid,target,user", names)
				}
			}
			// pg_sleep(0.02) is the slowest statement by mean time.
			if top := mf.GetMetric()[0]; top.GetGauge().GetValue() <= 0 {
				t.Errorf("mean seconds %v", top.GetGauge().GetValue())
			}
			if _, ok := pgValue(mfs, "warden_postgres_stat_statements_dealloc_total", nil); !ok {
				t.Error("dealloc counter missing (PostgreSQL 14+)")
			}
		}
	})

	t.Run("extension dropped between scrapes", func(t *testing.T) {
		db2, dsn2 := pgFreshDatabase(t, sharedPG.Get(t))
		pgExec(t, sharedPG.Get(t), db2, "CREATE EXTENSION pg_stat_statements")
		c := newTestPostgresCollector(t, Target{DSN: dsn2, MaxConnections: 1, Statements: StatementsConfig{Enabled: true}}, nil)
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		pgExec(t, sharedPG.Get(t), db2, "DROP EXTENSION pg_stat_statements")
		// A new connection (the old one closed) must prepare the batch
		// afresh, which fails against the dropped extension.
		c.pool.Reset()
		mfs, _ := pgCollect(t, c, 10*time.Second)
		if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
			t.Fatal("pg_up != 1 after the extension was dropped")
		}
		if _, ok := pgValue(mfs, "pg_stat_database_numbackends", map[string]string{"datname": db2}); !ok {
			t.Error("other metrics lost after the extension was dropped")
		}
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Errorf("second scrape after drop: %v", err)
		}
	})
}

// pgRoundTripCounter counts request/response exchanges on the wire: a read
// that follows a write starts a new round trip.
type pgRoundTripCounter struct {
	n atomic.Int64
}

type pgCountingConn struct {
	net.Conn
	c       *pgRoundTripCounter
	mu      sync.Mutex
	written bool
}

func (c *pgCountingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.written = true
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *pgCountingConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.written {
		c.written = false
		c.c.n.Add(1)
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

func (r *pgRoundTripCounter) wrap(conn net.Conn) net.Conn { return &pgCountingConn{Conn: conn, c: r} }

// pgScrapeRoundTrips returns how many round trips one warm scrape of a
// fully configured target makes.
func pgScrapeRoundTrips(t testing.TB, target Target) int64 {
	t.Helper()
	var rt pgRoundTripCounter
	c := newTestPostgresCollector(t, target, rt.wrap)
	for range 3 { // connect, prepare, discover the extension
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	before := rt.n.Load()
	if _, err := pgCollect(t, c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return rt.n.Load() - before
}

func TestPostgresScrapeIsOneRoundTrip(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, db, 3)
	pgExec(t, sharedPG.Get(t), db, "CREATE EXTENSION pg_stat_statements")
	got := pgScrapeRoundTrips(t, Target{DSN: dsn, MaxConnections: 1, Statements: StatementsConfig{Enabled: true}})
	if got != 1 {
		t.Errorf("a warm scrape made %d round trips, want 1", got)
	}
}

func TestPostgresCollectReturnsAtDeadlineWhenServerHangsAndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	pg := testenv.StartPostgres(t)
	c := newTestPostgresCollector(t, Target{Name: "hang", DSN: pg.DSN("postgres")}, nil)
	if mfs, err := pgCollect(t, c, 10*time.Second); err != nil {
		t.Fatalf("healthy collect: %v", err)
	} else if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
		t.Fatalf("healthy pg_up = %v", v)
	}

	resume := pgPauseServer(t, pg)
	resumed := false
	defer func() {
		if !resumed {
			resume()
		}
	}()
	// First on the pooled (now hung) connection, then on a new one, whose
	// handshake hangs.
	for i := range 2 {
		start := time.Now()
		mfs, err := pgCollect(t, c, 2*time.Second)
		elapsed := time.Since(start)
		if err == nil {
			t.Errorf("paused collect %d: no error", i)
		}
		t.Logf("paused collect %d returned after %s: %v", i, elapsed.Round(time.Millisecond), err)
		if elapsed > 2500*time.Millisecond {
			t.Errorf("paused collect %d took %s, want about the 2s deadline", i, elapsed)
		}
		if v, ok := pgValue(mfs, "pg_up", map[string]string{"target": "hang"}); !ok || v != 0 {
			t.Errorf("paused collect %d: pg_up = %v (present %v), want 0", i, v, ok)
		}
	}

	resume()
	resumed = true
	mfs, err := pgCollect(t, c, 5*time.Second)
	if err != nil {
		t.Fatalf("collect after resume: %v", err)
	}
	if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
		t.Errorf("pg_up after resume = %v, want 1 with the same collector", v)
	}
}

func TestPostgresCollectRecoversAfterServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	pg := testenv.StartPostgres(t)
	c := newTestPostgresCollector(t, Target{DSN: pg.DSN("postgres")}, nil)
	if _, err := pgCollect(t, c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	pgKillServer(t, pg)
	mfs, err := pgCollect(t, c, 2*time.Second)
	if v, _ := pgValue(mfs, "pg_up", nil); err == nil || v != 0 {
		t.Errorf("killed server: pg_up = %v, err = %v; want 0 and an error", v, err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	// The pooled connection is dead; the collector replaces it within the
	// same scrape instead of reporting pg_up 0 once more.
	mfs, err = pgCollect(t, c, 5*time.Second)
	if v, _ := pgValue(mfs, "pg_up", nil); err != nil || v != 1 {
		t.Errorf("restarted server: pg_up = %v, err = %v; want 1", v, err)
	}
}

func TestPostgresConnectionsNeverExceedMaxAndDoNotLeak(t *testing.T) {
	dbA, dsnA := pgFreshDatabase(t, sharedPG.Get(t))
	dbB, _ := pgFreshDatabase(t, sharedPG.Get(t))
	const maxConns = 3 // two for dbA, one for dbB's tables
	c := newTestPostgresCollector(t, Target{DSN: dsnA, MaxConnections: maxConns, Databases: []string{dbA, dbB}}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mon, err := pgx.Connect(ctx, sharedPG.Get(t).DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close(context.Background())
	count := func() int {
		var n int
		if err := mon.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = ANY($2)`,
			pgApplicationName, []string{dbA, dbB}).Scan(&n); err != nil {
			t.Errorf("count connections: %v", err)
		}
		return n
	}

	var (
		peak    atomic.Int64
		stop    = make(chan struct{})
		monDone = make(chan struct{})
	)
	go func() {
		defer close(monDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(count()); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var (
		wg       sync.WaitGroup
		failures atomic.Int64
	)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := pgCollect(t, c, 30*time.Second); err != nil {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monDone
	if failures.Load() > 0 {
		t.Errorf("%d of 100 concurrent collects failed", failures.Load())
	}
	if p := peak.Load(); p > maxConns || p == 0 {
		t.Errorf("peak connections during 100 concurrent collects = %d, want 1..%d", p, maxConns)
	}
	t.Logf("peak connections during 100 concurrent collects: %d (max_connections %d)", peak.Load(), maxConns)

	before := count()
	for i := range 1000 {
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Fatalf("sequential collect %d: %v", i, err)
		}
	}
	if after := count(); after != before {
		t.Errorf("connections before 1000 sequential collects = %d, after = %d", before, after)
	}
}

func TestPostgresConfig(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("defaults", func(t *testing.T) {
		cfg, err := parseTargets(("postgres:\n- name: main\n  dsn: postgres://mon@db:5432/app\n  tables: {}\n"))
		if err != nil {
			t.Fatal(err)
		}
		got := cfg[0]
		want := Target{
			Name: "main", DSN: "postgres://mon@db:5432/app", MaxConnections: 2,
			StatementTimeout: 5 * time.Second, LockTimeout: time.Second, ConnectTimeout: 3 * time.Second,
			Tables: TablesConfig{TopN: 20}, Statements: StatementsConfig{TopN: 20},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	t.Run("all fields", func(t *testing.T) {
		yml := fmt.Sprintf(`postgres:
- name: main
  dsn: host=db user=mon dbname=app
  password: {file: %s}
  max_connections: 5
  statement_timeout: 2s
  lock_timeout: 500ms
  connect_timeout: 1s
  databases: [app, other]
  tables: {top_n: 7}
  statements: {enabled: true, top_n: 9}
`, pwFile)
		cfg, err := parseTargets((yml))
		if err != nil {
			t.Fatal(err)
		}
		got := cfg[0]
		if got.MaxConnections != 5 || got.StatementTimeout != 2*time.Second || got.LockTimeout != 500*time.Millisecond || got.ConnectTimeout != time.Second ||
			got.Tables.TopN != 7 || !got.Statements.Enabled || got.Statements.TopN != 9 || len(got.Databases) != 2 || got.Password.File != pwFile {
			t.Errorf("got %+v", got)
		}
	})

	const secret = "Sup3r-s3cret"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"unknown field", "  max_conns: 3\n", "field max_conns not found"},
		{"unknown nested field", "  tables: {topn: 3}\n", "field topn not found"},
		{"max_connections zero", "  max_connections: 0\n", "postgres[0].max_connections: must be between 1 and 20"},
		{"max_connections too high", "  max_connections: 21\n", "postgres[0].max_connections: must be between 1 and 20"},
		{"statement_timeout", "  statement_timeout: -1s\n", "postgres[0].statement_timeout: must be positive"},
		{"connect_timeout", "  connect_timeout: 0s\n", "postgres[0].connect_timeout: must be positive"},
		{"lock_timeout", "  lock_timeout: 0s\n", "postgres[0].lock_timeout: must be positive"},
		{"tables top_n", "  tables: {top_n: 0}\n", "postgres[0].tables.top_n: must be between 1 and 1000"},
		{"tables top_n with all", "  tables: {top_n: 20, all: true}\n", "postgres[0].tables.top_n: must be left out with tables.all"},
		{"statements top_n", "  statements: {top_n: 5000}\n", "postgres[0].statements.top_n: must be between 1 and 1000"},
		{"missing password file", "  password: {file: /nonexistent/pw}\n", "postgres[0].password: read secret file"},
		{"missing password env", "  password: {env: WARDEN_TEST_UNSET_PG_PASSWORD}\n", "postgres[0].password: environment variable WARDEN_TEST_UNSET_PG_PASSWORD is not set"},
		{"duplicate database", "  databases: [a, a]\n", "postgres[0].databases[1]: \"a\" is listed twice"},
		{"too many databases", "  databases: [a, b, c]\n", "postgres[0].databases: per-table metrics for 3 databases besides the DSN's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTargets(("postgres:\n- name: main\n  dsn: postgres://mon@db/app\n" + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}

	for _, tc := range []struct{ name, dsn string }{
		{"bad port", "postgres://mon:" + secret + "@db:notaport/app"},
		{"bad url escape", "postgres://mon:" + secret + "%zz@db/app"},
		{"bad option", "postgres://mon:" + secret + "@db/app?sslmode=sometimes"},
		{"password with @", "postgres://mon:" + secret + "@x@db:99999999/app"},
		{"key value bad port", "host=db port=nope user=mon password=" + secret},
		{"key value quoted", "host=db port=nope user=mon password='" + secret + " x'"},
		{"key value unterminated", "host=db user=mon password='" + secret},
		{"query password", "postgres://mon@db:nope/app?password=" + secret},
		{"garbage", "::" + secret + "::"},
	} {
		t.Run("bad dsn "+tc.name, func(t *testing.T) {
			_, err := parseTargets((fmt.Sprintf("postgres:\n- name: main\n  dsn: %q\n", tc.dsn)))
			if err == nil {
				t.Fatalf("dsn %q accepted", tc.dsn)
			}
			if !strings.Contains(err.Error(), "postgres[0].dsn: invalid DSN") {
				t.Errorf("error %q does not name the field", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestPostgresPasswordFromSecretFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	// A server that requires a password.
	pg := testenv.StartPostgres(t, testenv.WithPostgresSetting("password_encryption", "scram-sha-256"))
	pgExec(t, pg, "postgres", "CREATE ROLE mon LOGIN PASSWORD 'right-pw'")
	hba := filepath.Join(pg.DataDir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("host all mon 127.0.0.1/32 scram-sha-256\nhost all postgres 127.0.0.1/32 trust\nlocal all all trust\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pgExec(t, pg, "postgres", "SELECT pg_reload_conf()")

	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("right-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://mon:wrong-pw@%s/postgres?sslmode=disable", pg.Addr())
	c := newTestPostgresCollector(t, Target{DSN: dsn, Password: secret.Secret{File: pwFile}}, nil)
	var mfs map[string]*dto.MetricFamily
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for { // pg_reload_conf is asynchronous
		mfs, err = pgCollect(t, c, 5*time.Second)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("collect with the password file overriding the DSN's: %v", err)
	}
	if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
		t.Errorf("pg_up = %v", v)
	}

	// Without the file the DSN's wrong password fails, and the error does
	// not show it.
	bad := newTestPostgresCollector(t, Target{DSN: dsn}, nil)
	_, err = pgCollect(t, bad, 5*time.Second)
	if err == nil || strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("wrong password: err = %v", err)
	}
}

func TestPostgresMetricsPassPromtoolCheck(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	testenv.Promtool(t)
	pgCreateTables(t, db, 3)
	pgExec(t, sharedPG.Get(t), db, "CREATE EXTENSION pg_stat_statements")
	// With the example's custom queries, for their metrics and
	// warden_postgres_custom_query_*.
	c := newTestPostgresCollector(t, Target{DSN: dsn, Statements: StatementsConfig{Enabled: true}, Queries: pgExampleTarget(t).Queries}, nil)
	a := &exportertest.Adapter{C: c, Timeout: 10 * time.Second}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a)
	for range 2 { // the second scrape has the statements in the main batch
		text := testenv.Exposition(t, reg)
		if a.LastErr() != nil {
			t.Fatalf("collect: %v", a.LastErr())
		}
		for _, name := range []string{"pg_stat_statements_calls_total", "warden_postgres_custom_query_age_seconds", "pg_public_table_size_bytes", "pg_connections_by_user"} {
			if !strings.Contains(text, name) {
				t.Fatalf("%s missing from the output under check", name)
			}
		}
		testenv.CheckMetrics(t, "postgres", text)
	}
	problems, err := testutil.CollectAndLint(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// pgPauseServer freezes the server, backends included, as a hung server,
// and returns the function that resumes it.
func pgPauseServer(t testing.TB, pg *testenv.Postgres) (resume func()) {
	t.Helper()
	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := pg.Resume(); err != nil {
			t.Error(err)
		}
	}
}

// pgKillServer kills the postmaster and its backends with SIGKILL.
func pgKillServer(t testing.TB, pg *testenv.Postgres) {
	t.Helper()
	pg.Kill()
}

// pgHoldLocks runs sql in db in a transaction left open on a connection of
// its own, holding the locks it takes, and returns the function that
// releases them.
func pgHoldLocks(t testing.TB, pg *testenv.Postgres, db, sql string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

// pgLockedScrape is one scrape with the time a Prometheus scrape with
// scrape_timeout 4s leaves the collector; it checks what every scrape
// under a lock must show: pg_up 1, the families that need no table present,
// and a scrape that came back by itself rather than being cut off.
func pgLockedScrape(t *testing.T, c *Collector, what string) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	start := time.Now()
	mfs, err := pgCollect(t, c, 3500*time.Millisecond)
	t.Logf("%s: scrape took %s: %v", what, time.Since(start).Round(time.Millisecond), err)
	if v, ok := pgValue(mfs, "pg_up", nil); !ok || v != 1 {
		t.Fatalf("%s: pg_up = %v (present %v), want 1; err = %v", what, v, ok, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: the scrape ran into its deadline: %v", what, err)
	}
	for _, name := range []string{"pg_static", "pg_stat_database_numbackends", "warden_postgres_activity_connections", "pg_locks_waiting", "pg_stat_bgwriter_checkpoints_timed_total", "pg_stat_statements_calls_total"} {
		if pgSeriesCount(mfs, name) == 0 {
			t.Errorf("%s: %s missing", what, name)
		}
	}
	if v, ok := pgValue(mfs, "warden_postgres_query_failures_total", map[string]string{"query": "databases"}); !ok || v != 0 {
		t.Errorf("%s: query failures of databases = %v (present %v), want 0", what, v, ok)
	}
	return mfs, err
}

func TestPostgresLocksDuringMigrationKeepPgUpAndTheOtherFamilies(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, db, 3, "CREATE TABLE sessions (id int PRIMARY KEY)")
	pgExec(t, sharedPG.Get(t), db, "CREATE EXTENSION pg_stat_statements")
	c := newTestPostgresCollector(t, Target{Name: "lock", DSN: dsn, Databases: []string{db}, Statements: StatementsConfig{Enabled: true}}, nil)
	for range 2 { // discover the extension
		if _, err := pgCollect(t, c, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("table locked", func(t *testing.T) {
		// A migration's ALTER TABLE, VACUUM FULL: the locked table is left
		// out, every other table is reported.
		release := pgHoldLocks(t, sharedPG.Get(t), db, "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
		defer release()
		mfs, err := pgLockedScrape(t, c, "table locked")
		if err != nil {
			t.Errorf("table locked: %v", err)
		}
		if got := pgLabelValues(mfs, "pg_stat_user_tables_size_bytes", "relname"); strings.Join(got, ",") != "other,t01,t02,t03" {
			t.Errorf("table locked: tables %v, want all but sessions", got)
		}
		if v, _ := pgValue(mfs, "warden_postgres_query_failures_total", map[string]string{"query": "tables"}); v != 0 {
			t.Errorf("table locked: query failures of tables = %v, want 0", v)
		}
	})

	t.Run("index locked", func(t *testing.T) {
		// An index being rebuilt blocks reading the table's size: the
		// tables query ends in lock_timeout and fails alone.
		release := pgHoldLocks(t, sharedPG.Get(t), db, "REINDEX INDEX sessions_pkey")
		defer release()
		for i := range 2 {
			mfs, err := pgLockedScrape(t, c, fmt.Sprintf("index locked, scrape %d", i))
			if err == nil || !strings.Contains(err.Error(), "lock timeout") {
				t.Errorf("index locked, scrape %d: err = %v, want the tables query's lock timeout", i, err)
			}
			if n := pgSeriesCount(mfs, "pg_stat_user_tables_size_bytes"); n != 0 {
				t.Errorf("index locked, scrape %d: %d table series, want none (the family failed)", i, n)
			}
			if v, _ := pgValue(mfs, "warden_postgres_query_failures_total", map[string]string{"query": "tables"}); v != float64(i+1) {
				t.Errorf("index locked, scrape %d: query failures of tables = %v, want %d", i, v, i+1)
			}
		}
	})

	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if n := pgSeriesCount(mfs, "pg_stat_user_tables_size_bytes"); n != 5 {
		t.Errorf("after release: %d table series, want 5 (4 tables + other)", n)
	}
}

func TestPostgresLockInListedDatabaseFailsOnlyItsTables(t *testing.T) {
	dbA, dsnA := pgFreshDatabase(t, sharedPG.Get(t))
	dbB, _ := pgFreshDatabase(t, sharedPG.Get(t))
	pgCreateTables(t, dbA, 2)
	pgExec(t, sharedPG.Get(t), dbB, "CREATE TABLE sessions (id int PRIMARY KEY)")
	c := newTestPostgresCollector(t, Target{DSN: dsnA, Databases: []string{dbA, dbB}, MaxConnections: 2}, nil)
	pgHoldLocks(t, sharedPG.Get(t), dbB, "REINDEX INDEX sessions_pkey")
	mfs, err := pgCollect(t, c, 3500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "lock timeout") {
		t.Errorf("err = %v, want the tables query's lock timeout", err)
	}
	if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
		t.Errorf("pg_up = %v, want 1", v)
	}
	if got := pgLabelValues(mfs, "pg_stat_user_tables_size_bytes", "datname"); len(got) != 3 || got[0] != dbA {
		t.Errorf("table series for databases %v, want only %s's 3", got, dbA)
	}
	if v, _ := pgValue(mfs, "warden_postgres_query_failures_total", map[string]string{"query": "tables"}); v != 1 {
		t.Errorf("query failures of tables = %v, want 1", v)
	}
}

func TestPostgresStoppedPostmasterKeepsPgUpAndShowsInAcceptsConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	pg := testenv.StartPostgres(t)
	c := newTestPostgresCollector(t, Target{Name: "pm", DSN: pg.DSN("postgres"), MaxConnections: 1}, nil)
	c.acceptsInterval = 0 // check at every scrape
	mfs, err := pgCollect(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := pgValue(mfs, "warden_postgres_accepts_connections", nil); !ok || v != 1 {
		t.Fatalf("healthy server: accepts_connections = %v (present %v), want 1", v, ok)
	}

	if err := pg.SignalPostmaster(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := pg.SignalPostmaster(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	mfs, err = pgCollect(t, c, 5*time.Second)
	if err != nil {
		t.Errorf("stopped postmaster: collect failed: %v", err)
	}
	if v, _ := pgValue(mfs, "pg_up", nil); v != 1 {
		t.Errorf("stopped postmaster: pg_up = %v, want 1 (the pooled session answers)", v)
	}
	if v, ok := pgValue(mfs, "warden_postgres_accepts_connections", nil); !ok || v != 0 {
		t.Errorf("stopped postmaster: accepts_connections = %v (present %v), want 0", v, ok)
	}

	resume()
	testenv.WaitFor(t, 30*time.Second, "accepts_connections back to 1", func() bool {
		mfs, _ := pgCollect(t, c, 5*time.Second)
		v, _ := pgValue(mfs, "warden_postgres_accepts_connections", nil)
		return v == 1
	})
}

func TestPostgresAcceptsCheckAtMostOncePerInterval(t *testing.T) {
	c := &Collector{acceptsInterval: time.Hour}
	if !c.acceptsDue() {
		t.Fatal("first scrape: check not due")
	}
	for i := range 3 {
		if c.acceptsDue() {
			t.Fatalf("scrape %d within the interval: check due again", i+2)
		}
	}
}

func TestPostgresPreparedQueryWhoseResultTypeChangedIsPreparedAgain(t *testing.T) {
	db, dsn := pgFreshDatabase(t, sharedPG.Get(t))
	pgExec(t, sharedPG.Get(t), db, "CREATE VIEW v AS SELECT 1::int AS a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	run := func() error {
		q := pgQuery{family: "v", sql: "SELECT a FROM v", read: func(rows pgx.Rows) error {
			rows.Close()
			return rows.Err()
		}}
		errs, _, connErr := runPipeline(ctx, conn, []pgQuery{q})
		if connErr != nil {
			t.Fatal(connErr)
		}
		return errs[0]
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	// Same text, another result type: the prepared plan cannot be reused.
	pgExec(t, sharedPG.Get(t), db, "DROP VIEW v", "CREATE VIEW v AS SELECT 'x'::text AS a")
	_ = run() // may fail once
	if err := run(); err != nil {
		t.Errorf("after the result type changed: %v (the statement is never prepared again)", err)
	}
}

func TestPostgresAcceptsCheckLeavesNoErrorInTheServerLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	chain, err := certgen.NewChain(certgen.ChainOptions{
		Root:         certgen.Options{CommonName: "root", NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
		Intermediate: certgen.Options{CommonName: "intermediate", NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
		Leaf:         certgen.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsPG := testenv.StartPostgres(t, testenv.WithPostgresTLS(certgen.ChainPEM(chain.Leaf, chain.Intermediate), chain.Leaf.KeyPEM()))
	for _, tc := range []struct {
		name string
		pg   *testenv.Postgres
	}{
		{"ssl on", tlsPG},
		{"ssl off", sharedPG.Get(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestPostgresCollector(t, Target{DSN: tc.pg.DSN("postgres")}, nil)
			logPath := filepath.Join(filepath.Dir(tc.pg.DataDir), "postgres.log")
			before, _ := os.ReadFile(logPath)
			if err := c.checkAccepts(context.Background()); err != nil {
				t.Fatalf("check against a healthy server: %v", err)
			}
			// The server logs a failed handshake or a broken startup
			// packet as soon as the check closes its connection, before
			// this marker, which comes from a later connection.
			marker := fmt.Sprintf("accepts-check-marker-%d", time.Now().UnixNano())
			pgExec(t, tc.pg, "postgres", fmt.Sprintf("DO $$ BEGIN RAISE LOG '%s'; END $$", marker))
			var after []byte
			testenv.WaitFor(t, 30*time.Second, "the marker in the server log", func() bool {
				after, _ = os.ReadFile(logPath)
				return strings.Contains(string(after), marker)
			})
			if added := string(after[min(len(before), len(after)):]); strings.Contains(added, "SSL") || strings.Contains(added, "startup packet") {
				t.Errorf("the check left lines in the server log:\n%s", added)
			}
		})
	}
}
