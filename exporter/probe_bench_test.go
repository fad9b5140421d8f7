package exporter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// benchExporter builds an exporter from yml for a benchmark.
func benchExporter(b *testing.B, yml string) *Exporter {
	b.Helper()
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		b.Fatal(err)
	}
	set, err := Build(b.Context(), cfg, discard(), nil)
	if err != nil {
		b.Fatal(err)
	}
	e := New(discard(), set, cfg.Scrape, prometheus.NewRegistry())
	b.Cleanup(func() { _ = e.Close() })
	return e
}

// benchServe runs one request on h and fails on anything but 200.
func benchServe(b *testing.B, h http.HandlerFunc, target string) {
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
	}
}

// BenchmarkPostgresProbeVersusConfiguredScrape compares one /probe of a
// PostgreSQL database with one /metrics scrape of the same database
// configured as a target: the same collector, the same connection cap (1),
// the same databases (a probe of one database reports that database) and
// the same warm pool, so the two should cost the same (the bound:
// within 10 %). cpu-ns/op, the process's CPU time per scrape, is the
// figure to compare on a busy machine.
func BenchmarkPostgresProbeVersusConfiguredScrape(b *testing.B) {
	pg := sharedPG.Get(b)
	const db = "probe_vs_configured"
	if err := pg.Exec(b.Context(), "postgres", "DROP DATABASE IF EXISTS "+db, "CREATE DATABASE "+db); err != nil {
		b.Fatal(err)
	}
	configured := benchExporter(b, fmt.Sprintf(`
postgres:
  - {name: %q, dsn: %q, max_connections: 1, databases: [%s]}
`, pg.Addr()+"/"+db, pg.DSN(db), db))
	probed := benchExporter(b, "modules:\n"+pgModule("pg", 1))
	probeURL := "/probe?" + url.Values{"module": {"pg"}, "target": {pg.Addr() + "/" + db}}.Encode()

	b.Run("configured", func(b *testing.B) {
		cpu := benchProcessCPU(b)
		for b.Loop() {
			benchServe(b, configured.ServeHTTP, "/metrics")
		}
		b.ReportMetric(float64((benchProcessCPU(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("probe", func(b *testing.B) {
		cpu := benchProcessCPU(b)
		for b.Loop() {
			benchServe(b, probed.ServeProbe, probeURL)
		}
		b.ReportMetric(float64((benchProcessCPU(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
}

// benchProcessCPU is the CPU time (user and system) the test process has
// used: steadier than wall time on a busy machine.
func benchProcessCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProbe200Databases probes 200 databases of one PostgreSQL server
// in turn through /probe, with one connection per target, 16 probes at a
// time: "warm" has room for every target's pool (probe.max_connections
// 200), "capped" the default 50, so most probes evict the least recently
// used target and connect anew. It reports the throughput (ns/op: wall
// time over probes), the latency of one probe (p50-ms, p99-ms, with 16 in
// flight) and the most exporter sessions PostgreSQL saw (peak-conns).
func BenchmarkProbe200Databases(b *testing.B) {
	pg := bench200PG.Get(b)
	for _, limit := range []struct {
		name string
		max  int
	}{{"warm", 200}, {"capped", DefaultProbeConfig.MaxConnections}} {
		b.Run(limit.name, func(b *testing.B) {
			e := benchExporter(b, fmt.Sprintf("probe: {max_connections: %d}\nmodules:\n%s", limit.max, pgModule("pg", 1)))
			admin, err := pgx.Connect(b.Context(), pg.DSN("postgres"))
			if err != nil {
				b.Fatal(err)
			}
			defer admin.Close(context.Background())
			var (
				peak    int
				stop    = make(chan struct{})
				sampled sync.WaitGroup
			)
			sampled.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					if n, err := pgExporterSessions(context.Background(), admin, "probe200_"); err == nil {
						peak = max(peak, n)
					}
				}
			})
			var (
				next      sync.Mutex
				i         int
				latencies []time.Duration
			)
			b.SetParallelism(8) // 16 on two cores
			b.RunParallel(func(p *testing.PB) {
				for p.Next() {
					next.Lock()
					target := fmt.Sprintf("%s/probe200_%03d", pg.Addr(), i%200)
					i++
					next.Unlock()
					start := time.Now()
					benchServe(b, e.ServeProbe, "/probe?"+url.Values{"module": {"pg"}, "target": {target}}.Encode())
					d := time.Since(start)
					next.Lock()
					latencies = append(latencies, d)
					next.Unlock()
				}
			})
			close(stop)
			sampled.Wait()
			slices.Sort(latencies)
			b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(peak), "peak-conns")
			if peak > limit.max {
				b.Errorf("PostgreSQL saw %d exporter sessions, more than probe.max_connections=%d", peak, limit.max)
			}
		})
	}
}
