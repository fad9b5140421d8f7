// Command pgcompare scrapes warden-exporter with every table reported
// (tables.all: true) and postgres_exporter side by side, against the same
// database of many tables on a throw-away PostgreSQL server, and reports
// what one scrape costs each: wall time (p50/p90), the exporter process's
// CPU time, the PostgreSQL server's CPU time, series and bytes, and the
// ratio warden/postgres_exporter.
//
// warden-exporter is built from this tree the way the image builds it
// (-trimpath -ldflags "-s -w"); postgres_exporter runs with its default
// collectors (stat_user_tables and statio_user_tables among them) and
// default metrics. Both connect to the fixture database, and the run
// fails unless both report pg_stat_user_tables_* series for every one of
// its tables, so that like is compared with like. Scrapes are sequential,
// in blocks of --scrapes per exporter, the exporters taking turns for
// --rounds rounds so that a change in the machine's load falls on both.
// CPU times come from /proc/PID/stat (10 ms ticks) read around each block.
//
//	scripts/tools.sh postgres_exporter && eval "$(scripts/tools.sh env)"
//	go run ./bench/pgcompare                                  # 200 tables, 3 rounds of 30 scrapes each
//	go run ./bench/pgcompare --postgres-exporter /path/to/postgres_exporter --tables 500
//
// Run it from the repository root. Needs the PostgreSQL server binaries
// (scripts/install-deps.sh).
//
// Figures with the default flags (postgres_exporter v0.17.1, PostgreSQL
// 15 from scripts/install-deps.sh), three runs on a shared
// 2-core machine at load average 18–29 from other work; p50 and CPU are
// per scrape:
//
//	                        warden-exporter   postgres_exporter   ratio
//	wall p50                61–74 ms          346–614 ms          0.12–0.19×
//	wall p90                77–146 ms         482–867 ms          0.16–0.20×
//	exporter CPU            13.1–15.6 ms      67.8–70.0 ms        0.19–0.23×
//	PostgreSQL CPU          22.4–23.2 ms      146.7–155.3 ms      0.14–0.15×
//	series                  1,506             6,134               0.25×
//	pg_stat_user_tables_*   1,400 (7 × 200)   4,000 (20 × 200)
//	bytes, gzip / decoded   11.4 kB / 197 kB  33.4 kB / 657 kB    0.34× / 0.30×
//
// With --no-gzip (one run): wall p50 59 ms against 363 ms (0.16×), exporter
// CPU 15.2 ms against 64.0 ms (0.24×).
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warden-sre/warden/internal/testenv"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("pgcompare", "Per-scrape cost of warden-exporter (tables.all) against postgres_exporter on the same many-table database.")
	var (
		peBin   = app.Flag("postgres-exporter", "postgres_exporter binary (scripts/tools.sh postgres_exporter builds it).").Envar("POSTGRES_EXPORTER").String()
		tables  = app.Flag("tables", "Tables in the fixture database.").Default("200").Int()
		scrapes = app.Flag("scrapes", "Sequential scrapes of each exporter per round.").Default("30").Int()
		rounds  = app.Flag("rounds", "Rounds; in each, every exporter gets --scrapes scrapes in a row.").Default("3").Int()
		warmup  = app.Flag("warmup", "Scrapes of each exporter before measuring (connections, prepared statements).").Default("5").Int()
		gz      = app.Flag("gzip", "Ask for gzip, as Prometheus does (--no-gzip: uncompressed).").Default("true").Bool()
	)
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *tables < 1 || *scrapes < 1 || *rounds < 1 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "--tables, --scrapes and --rounds must be positive, --warmup not negative")
		return 2
	}
	if *peBin == "" {
		fmt.Fprintln(os.Stderr, "pgcompare: no postgres_exporter binary: pass --postgres-exporter or set POSTGRES_EXPORTER (scripts/tools.sh postgres_exporter builds it; eval \"$(scripts/tools.sh env)\" sets it)")
		return 2
	}
	if st, err := os.Stat(*peBin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		fmt.Fprintf(os.Stderr, "pgcompare: postgres_exporter binary %q is not an executable file (scripts/tools.sh postgres_exporter builds it)\n", *peBin)
		return 2
	}
	if err := compare(context.Background(), *peBin, *tables, *scrapes, *rounds, *warmup, *gz); err != nil {
		fmt.Fprintln(os.Stderr, "pgcompare:", err)
		return 1
	}
	return 0
}

// contender is one of the two exporters under comparison.
type contender struct {
	name string
	url  string
	proc *testenv.Process

	latencies []time.Duration
	cpu, pg   time.Duration // summed over the measured blocks
	wire, raw int           // bytes of the last scrape, as sent and decoded
	last      []byte
	stats     scrapeStats // of the last scrape
}

func compare(ctx context.Context, peBin string, tables, scrapes, rounds, warmup int, gz bool) error {
	fmt.Fprintln(os.Stderr, "starting PostgreSQL, creating the fixture and building warden-exporter …")
	dir, err := os.MkdirTemp("", "pgcompare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pg, err := testenv.NewPostgres()
	if err != nil {
		return err
	}
	defer pg.Stop()
	db := fmt.Sprintf("bench_tables_%d", tables)
	setup, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := pg.CreateTablesDatabase(setup, db, tables); err != nil {
		return fmt.Errorf("fixture: %w", err)
	}

	warden, err := startWarden(ctx, dir, pg.DSN(db))
	if err != nil {
		return err
	}
	defer warden.proc.Stop(syscall.SIGTERM, 10*time.Second)
	pe, err := startPostgresExporter(ctx, dir, peBin, pg.DSN(db))
	if err != nil {
		return err
	}
	defer pe.proc.Stop(syscall.SIGTERM, 10*time.Second)
	exporters := []*contender{warden, pe}

	client := &http.Client{Timeout: time.Minute}
	for _, e := range exporters {
		for range warmup {
			if _, err := e.scrape(ctx, client, gz); err != nil {
				return err
			}
		}
	}
	for r := range rounds {
		order := exporters
		if r%2 == 1 {
			order = []*contender{pe, warden}
		}
		for _, e := range order {
			if err := e.block(ctx, client, scrapes, gz, pg.PID()); err != nil {
				return err
			}
		}
	}

	for _, e := range exporters {
		if err := e.checkTables(db, tables); err != nil {
			return err
		}
	}
	report(os.Stdout, tables, rounds*scrapes, gz, warden, pe)
	return nil
}

// startWarden builds warden-exporter and runs it with every table of dsn's
// database reported.
func startWarden(ctx context.Context, dir, dsn string) (*contender, error) {
	bin := filepath.Join(dir, "warden-exporter")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/warden-exporter")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build warden-exporter (run from the repository root): %w\n%s", err, out)
	}
	cfg := filepath.Join(dir, "warden-exporter.yml")
	if err := os.WriteFile(cfg, []byte(wardenConfig(dsn)), 0o644); err != nil {
		return nil, err
	}
	return start(ctx, "warden-exporter", filepath.Join(dir, "warden-exporter.log"), "/-/ready", nil,
		bin, "--config.file="+cfg, "--log.level=error")
}

func wardenConfig(dsn string) string {
	return fmt.Sprintf("postgres:\n  - {name: main, dsn: %q, tables: {all: true}}\n", dsn)
}

// startPostgresExporter runs postgres_exporter with its defaults against
// dsn (an empty configuration file: no auth modules).
func startPostgresExporter(ctx context.Context, dir, bin, dsn string) (*contender, error) {
	cfg := filepath.Join(dir, "postgres_exporter.yml")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		return nil, err
	}
	return start(ctx, "postgres_exporter", filepath.Join(dir, "postgres_exporter.log"), "/", []string{"DATA_SOURCE_NAME=" + dsn},
		bin, "--config.file="+cfg, "--log.level=error")
}

// start runs bin with --web.listen-address on a free loopback port and
// waits until path answers 200.
func start(ctx context.Context, name, logPath, path string, env []string, bin string, args ...string) (*contender, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	proc, err := testenv.StartProcess(logPath, func() *exec.Cmd {
		cmd := exec.Command(bin, append(args, "--web.listen-address="+addr)...)
		cmd.Env = append(os.Environ(), env...)
		return cmd
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	url := "http://" + addr
	if err := proc.WaitReady(ctx, time.Minute, testenv.HTTPReady(url+path)); err != nil {
		return nil, fmt.Errorf("%s never became ready: %w", name, err)
	}
	return &contender{name: name, url: url + "/metrics", proc: proc}, nil
}

// scrape fetches /metrics once, as Prometheus does, and returns how long
// it took; it keeps the bytes of the answer.
func (e *contender) scrape(ctx context.Context, client *http.Client, gz bool) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "30")
	// Set explicitly, so that the client neither adds it nor decodes the
	// body: the bytes counted are those on the wire.
	req.Header.Set("Accept-Encoding", "identity")
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", e.name, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", e.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s: %.200s", e.name, resp.Status, body)
	}
	e.wire, e.last = len(body), body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", e.name, err)
		}
		if e.last, err = io.ReadAll(zr); err != nil {
			return 0, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	e.raw = len(e.last)
	return took, nil
}

// block runs n scrapes in a row and adds their latencies and the CPU time
// the exporter and the PostgreSQL server (pid pgPID) used meanwhile.
func (e *contender) block(ctx context.Context, client *http.Client, n int, gz bool, pgPID int) error {
	pid := e.proc.PID()
	if pid == 0 {
		return fmt.Errorf("%s has exited:\n%s", e.name, testenv.Tail(e.proc.LogPath(), 20))
	}
	cpu0, pg0, err := cpuTimes(pid, pgPID)
	if err != nil {
		return err
	}
	for range n {
		d, err := e.scrape(ctx, client, gz)
		if err != nil {
			return err
		}
		e.latencies = append(e.latencies, d)
	}
	cpu1, pg1, err := cpuTimes(pid, pgPID)
	if err != nil {
		return err
	}
	e.cpu += cpu1 - cpu0
	e.pg += pg1 - pg0
	return nil
}

// cpuTimes reads the CPU time of the exporter (pid) and of the PostgreSQL
// server (the postmaster pgPID and its backends).
func cpuTimes(pid, pgPID int) (exporter, server time.Duration, err error) {
	if exporter, err = testenv.ProcessCPU(pid); err != nil {
		return 0, 0, err
	}
	server, err = testenv.TreeCPU(pgPID)
	return exporter, server, err
}

// checkTables fails unless the last scrape has per-table series for every
// table of database db.
func (e *contender) checkTables(db string, tables int) error {
	st, err := parseScrape(e.last, db)
	if err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	e.stats = st
	if st.tables != tables {
		return fmt.Errorf("%s reports pg_stat_user_tables_* series for %d tables of %s, want %d: not a like-for-like comparison", e.name, st.tables, db, tables)
	}
	return nil
}

// scrapeStats is what parseScrape counts in one exposition.
type scrapeStats struct {
	series int // samples, every family
	// tableSeries are the pg_stat_user_tables_* samples of the database,
	// tables the distinct tables they name ("other", warden's sum of the
	// tables not listed, is not one).
	tableSeries, tables int
}

// parseScrape counts the series of a text exposition, and the per-table
// ones of database db.
func parseScrape(body []byte, db string) (scrapeStats, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return scrapeStats{}, fmt.Errorf("parse the exposition: %w", err)
	}
	var st scrapeStats
	seen := map[string]bool{}
	for name, mf := range families {
		st.series += len(mf.GetMetric())
		if !strings.HasPrefix(name, "pg_stat_user_tables_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["datname"] != db || labels["relname"] == "" || labels["relname"] == "other" {
				continue
			}
			st.tableSeries++
			seen[labels["schemaname"]+"."+labels["relname"]] = true
		}
	}
	st.tables = len(seen)
	return st, nil
}

// percentile is the p-quantile (0 < p ≤ 1) of ds by the nearest-rank
// method, 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// ratio is a/b as "0.27×", or "n/a" when b is 0.
func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func report(w io.Writer, tables, n int, gz bool, warden, pe *contender) {
	enc := "identity"
	if gz {
		enc = "gzip"
	}
	fmt.Fprintf(w, "%d tables, %d sequential scrapes of each exporter (%s)\n", tables, n, enc)
	type row struct {
		what string
		val  func(e *contender) float64
		show func(float64) string
	}
	dur := func(v float64) string { return ms(time.Duration(v)) }
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	rows := []row{
		{"wall p50", func(e *contender) float64 { return float64(percentile(e.latencies, 0.5)) }, dur},
		{"wall p90", func(e *contender) float64 { return float64(percentile(e.latencies, 0.9)) }, dur},
		{"exporter CPU/scrape", func(e *contender) float64 { return float64(e.cpu) / float64(n) }, dur},
		{"PostgreSQL CPU/scrape", func(e *contender) float64 { return float64(e.pg) / float64(n) }, dur},
		{"series", func(e *contender) float64 { return float64(e.stats.series) }, num},
		{"pg_stat_user_tables_*", func(e *contender) float64 { return float64(e.stats.tableSeries) }, num},
		{"bytes on the wire", func(e *contender) float64 { return float64(e.wire) }, num},
		{"bytes decoded", func(e *contender) float64 { return float64(e.raw) }, num},
	}
	fmt.Fprintf(w, "%-24s %16s %18s %8s\n", "", "warden-exporter", "postgres_exporter", "ratio")
	for _, r := range rows {
		a, b := r.val(warden), r.val(pe)
		fmt.Fprintf(w, "%-24s %16s %18s %8s\n", r.what, r.show(a), r.show(b), ratio(a, b))
	}
}
