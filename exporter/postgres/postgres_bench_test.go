package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/testenv"
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
			scrape := pgBenchCollect(b, c, 4096)
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

var (
	pgBench200Once sync.Once
	pgBench200DSN  string
	pgBench200Fail string
)

// pgBench200Tables is a database of 200 tables (each with a primary key
// index and 100 rows, analyzed), the fixture of the per-table benchmark.
func pgBench200Tables(b *testing.B) (db, dsn string) {
	b.Helper()
	const name = "bench_tables_200"
	pgBench200Once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		pg := sharedPG.Get(b)
		if err := pg.CreateTablesDatabase(ctx, name, 200); err != nil {
			pgBench200Fail = err.Error()
			return
		}
		pgBench200DSN = pg.DSN(name)
	})
	if pgBench200Fail != "" {
		b.Fatal(pgBench200Fail)
	}
	return name, pgBench200DSN
}

// pgProcessCPU is the CPU time (user and system) this process has used.
func pgProcessCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgBackendCPU is the CPU time (user and system) the server process pid
// has used, from /proc (clock ticks of 10 ms).
func pgBackendCPU(b *testing.B, pid int) time.Duration {
	cpu, err := testenv.ProcessCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

// pgBenchCollect returns a scrape that runs Collect into a channel of
// capacity size, drains it and returns the series it received.
func pgBenchCollect(b *testing.B, c *Collector, size int) func() int {
	ch := make(chan prometheus.Metric, size)
	return func() int {
		if err := c.Collect(context.Background(), ch); err != nil {
			b.Fatal(err)
		}
		n := len(ch)
		for len(ch) > 0 {
			<-ch
		}
		return n
	}
}

// pgBenchScrapeCPU warms c with three scrapes (connect, prepare), then
// times scrape and reports the series of the last one and, per scrape, the
// CPU time of this process and of the server backend that answered.
func pgBenchScrapeCPU(b *testing.B, c *Collector, scrape func() int) {
	for range 3 {
		scrape()
	}
	conn, err := c.pool.Acquire(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	pid := int(conn.Conn().PgConn().PID())
	conn.Release()
	var series int
	cpu0, server0 := pgProcessCPU(b), pgBackendCPU(b, pid)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		series = scrape()
	}
	b.StopTimer()
	cpu, server := pgProcessCPU(b)-cpu0, pgBackendCPU(b, pid)-server0
	b.ReportMetric(float64(series), "series/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "exporter-cpu-ns/op")
	b.ReportMetric(float64(server.Nanoseconds())/float64(b.N), "server-cpu-ns/op")
}

// BenchmarkPostgresScrapeTables measures a scrape of a warm collector
// against a database of 200 tables: the default top 20 plus other, and
// tables.all (every table's series). "collect" is Collect alone;
// "exposition" is what a /metrics request costs the exporter: Collect
// through a registry's Gather and the text encoding of every series.
// Besides time and allocations it reports the series sent, the exporter
// process's CPU time per scrape (getrusage, user+system: the collector and
// the Go runtime) and the CPU time of the server process that answered
// (/proc/<pid>/stat of its backend, in 10 ms ticks), both per scrape.
func BenchmarkPostgresScrapeTables(b *testing.B) {
	db, dsn := pgBench200Tables(b)
	for _, bc := range []struct {
		name   string
		tables TablesConfig
	}{
		{"top20", TablesConfig{TopN: 20}},
		{"all", TablesConfig{All: true}},
	} {
		for _, mode := range []string{"collect", "exposition"} {
			b.Run(bc.name+"/"+mode, func(b *testing.B) {
				c := newTestPostgresCollector(b, Target{
					DSN: dsn, MaxConnections: 1, Databases: []string{db}, Tables: bc.tables,
				}, nil)
				reg := prometheus.NewRegistry()
				reg.MustRegister(&exportertest.Adapter{C: c, Timeout: time.Minute})
				collect := pgBenchCollect(b, c, 8192)
				scrape := func() int {
					if mode == "exposition" {
						mfs, err := reg.Gather()
						if err != nil {
							b.Fatal(err)
						}
						enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
						n := 0
						for _, mf := range mfs {
							if err := enc.Encode(mf); err != nil {
								b.Fatal(err)
							}
							n += len(mf.GetMetric())
						}
						return n
					}
					return collect()
				}
				pgBenchScrapeCPU(b, c, scrape)
			})
		}
	}
}

// BenchmarkPostgresCustomQueries measures what the example configuration's
// three custom queries (run every scrape: min_interval 0) add to a warm
// scrape of the benchmark database, against the same scrape without them.
func BenchmarkPostgresCustomQueries(b *testing.B) {
	db, dsn := pgBenchDatabase(b)
	queries := pgExampleTarget(b).Queries
	for i := range queries {
		queries[i].MinInterval = 0
	}
	for _, bc := range []struct {
		name    string
		queries []Query
	}{
		{"none", nil},
		{"runbook-3", queries},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newTestPostgresCollector(b, Target{
				DSN: dsn, MaxConnections: 1, Databases: []string{db},
				Statements: StatementsConfig{Enabled: true}, Queries: bc.queries,
			}, nil)
			pgBenchScrapeCPU(b, c, pgBenchCollect(b, c, 4096))
		})
	}
}
