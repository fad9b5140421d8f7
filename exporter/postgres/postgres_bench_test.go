package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	pgBenchOnce      sync.Once
	pgBenchDB        string
	pgBenchDSN       string
	pgBenchSetupFail string
)

// pgBenchDatabase is a database shaped like a small production one: 30
// tables (20 reported, the rest in the overflow series) and
// pg_stat_statements installed. It is created once and shared by the
// benchmarks (and their -count repetitions), so that the number of
// databases on the server, which the scrape's cost depends on, stays the
// same.
func pgBenchDatabase(b *testing.B) (db, dsn string) {
	b.Helper()
	pgBenchOnce.Do(func() {
		name := fmt.Sprintf("bench_%d", time.Now().UnixNano()%1e6)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := sharedPG.Get(b).Exec(ctx, "postgres", "CREATE DATABASE "+name); err != nil {
			pgBenchSetupFail = err.Error()
			return
		}
		var sql []string
		for i := 1; i <= 30; i++ {
			sql = append(sql,
				fmt.Sprintf("CREATE TABLE t%02d (id int, pad text) WITH (autovacuum_enabled = false)", i),
				fmt.Sprintf("INSERT INTO t%02d SELECT g, repeat('x', 100) FROM generate_series(1, %d) g", i, i*200))
		}
		sql = append(sql, "CREATE EXTENSION pg_stat_statements")
		if err := sharedPG.Get(b).Exec(ctx, name, sql...); err != nil {
			pgBenchSetupFail = err.Error()
			return
		}
		pgBenchDB, pgBenchDSN = name, sharedPG.Get(b).DSN(name)
	})
	if pgBenchSetupFail != "" {
		b.Fatal(pgBenchSetupFail)
	}
	return pgBenchDB, pgBenchDSN
}

// BenchmarkPostgresScrape measures one full Collect of a warm collector on
// loopback, and reports the round trips it makes. "all-databases" is the
// default configuration (sizes of every database on the server);
// "one-database" lists only the benchmark's database.
func BenchmarkPostgresScrape(b *testing.B) {
	db, dsn := pgBenchDatabase(b)
	for _, bc := range []struct {
		name      string
		databases []string
	}{
		{"all-databases", nil},
		{"one-database", []string{db}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rt pgRoundTripCounter
			c := newTestPostgresCollector(b, Target{
				DSN: dsn, MaxConnections: 1, Databases: bc.databases,
				Statements: StatementsConfig{Enabled: true},
			}, rt.wrap)
			ctx := context.Background()
			ch := make(chan prometheus.Metric, 4096)
			scrape := func() int {
				if err := c.Collect(ctx, ch); err != nil {
					b.Fatal(err)
				}
				n := len(ch)
				for len(ch) > 0 {
					<-ch
				}
				return n
			}
			for range 3 { // connect, prepare, discover pg_stat_statements
				scrape()
			}
			before := rt.n.Load()
			var series int
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				series = scrape()
			}
			b.StopTimer()
			b.ReportMetric(float64(rt.n.Load()-before)/float64(b.N), "roundtrips/op")
			b.ReportMetric(float64(series), "series/op")
		})
	}
}

// BenchmarkPostgresBareRoundTrips is the floor a scrape is compared with:
// as many SELECT 1 round trips as one scrape makes (1), on a warm
// connection.
func BenchmarkPostgresBareRoundTrips(b *testing.B) {
	_, dsn := pgBenchDatabase(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	const roundTrips = 1 // TestPostgresScrapeIsOneRoundTrip
	var n int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for range roundTrips {
			if err := pool.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPostgresRawBatch runs the scrape's queries as the collector
// sends them (one pipeline, each query in its own implicit transaction) and
// discards the rows: the server's share of a scrape, without the
// collector's decoding and metric building.
func BenchmarkPostgresRawBatch(b *testing.B) {
	_, dsn := pgBenchDatabase(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var schema string
	if err := pool.QueryRow(ctx, `SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'`).Scan(&schema); err != nil {
		b.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	major := pgMajorVersion(conn.Conn())
	stmts, info := pgStatementsQueries(schema, major)
	discard := func(rows pgx.Rows) error {
		for rows.Next() {
		}
		rows.Close()
		return rows.Err()
	}
	topN := []byte(fmt.Sprint(pgDefaultTopN))
	queries := []pgQuery{
		{sql: pgTimeoutsQuery, args: [][]byte{[]byte("5000"), []byte("1000")}, read: discard},
		{sql: pgSettingsQuery, read: discard},
		{sql: pgDatabasesQuery, args: [][]byte{nil}, read: discard},
		{sql: pgActivityQuery, read: discard},
		{sql: pgLocksQuery, read: discard},
		{sql: pgCheckpointsQuery(major), read: discard},
		{sql: stmts, args: [][]byte{topN}, read: discard},
		{sql: pgTablesQuery, args: [][]byte{topN}, read: discard},
	}
	if info != "" {
		queries = append(queries, pgQuery{sql: info, read: discard})
	}
	run := func() {
		errs, _, connErr := runPipeline(ctx, conn.Conn(), queries)
		if err := errors.Join(append(errs, connErr)...); err != nil {
			b.Fatal(err)
		}
	}
	run()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		run()
	}
}
