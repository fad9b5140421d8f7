// Command exporterrss measures the memory of the real warden-exporter
// binary: idle, and at the peak of bursts of concurrent scrapes. It builds
// the binary the way the image does (-trimpath -ldflags "-s -w"), starts
// throw-away PostgreSQL and Redis servers, a TLS endpoint, certificate and
// log files, runs the binary against them and reads VmRSS, RssAnon,
// RssFile and VmHWM from /proc/PID/status.
//
//	go run ./bench/exporterrss                      # every collector, 5 bursts of 100 scrapes of /metrics
//	go run ./bench/exporterrss --mode postgres      # PostgreSQL only
//	go run ./bench/exporterrss --mode probe         # 100 concurrent /probe of 20 databases, cap 10
//
// Needs the PostgreSQL and Redis server binaries (scripts/install-deps.sh).
//
// Figures on a shared 2-core machine (load average 20-30 from other work),
// with the default flags (go run ./bench/exporterrss [--mode …]):
//
//	mode      idle VmRSS (anon + file)   peak VmHWM   p50 / p99 scrape   PostgreSQL sessions
//	full      25.1 MiB (5.2 + 20.0)      42.1 MiB     207 / 294 ms       2 (cap 2)
//	postgres  22.2 MiB (2.7 + 19.4)      32.7 MiB     92 / 325 ms        1
//	probe     22.2 MiB (2.7 + 19.5)      37.0 MiB     473 / 1703 ms      10 (probe.max_connections 10)
//
// Most of the RSS is file-backed pages of the binary (RssFile), not heap.
// The exporter used to link client-go's typed clientset (every API group's
// types registered into its scheme) for the certificate Secrets and the
// auth-service pod logs; it now reads them through internal/kubecore (the
// REST transport and small JSON structs). Measured the same day, same
// machine, full mode, the previous binary (62.1 MB with -s -w, 284 k8s.io
// packages) against this one (31.2 MB, 84 k8s.io packages, no k8s.io/api):
// idle 46.3 MiB (6.2 + 40.1) against 25.1 MiB, peak 62.8 MiB against
// 42.1 MiB. (On a quieter day the previous binary measured 36.6 MiB idle and
// 53.0 MiB at the peak; latencies depend on the machine's load.) Before
// scrapes shared a collection and its encoded answer, full peaked at
// 89.5 MiB.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/jackc/pgx/v5"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("exporterrss", "Idle and peak RSS of the warden-exporter binary under concurrent scrapes.")
	var (
		mode      = app.Flag("mode", "full (every collector), postgres, or probe (/probe of --targets databases).").Default("full").Enum("full", "postgres", "probe")
		scrapes   = app.Flag("scrapes", "Concurrent scrapes in a burst.").Default("100").Int()
		rounds    = app.Flag("rounds", "Bursts, one after the other.").Default("5").Int()
		targets   = app.Flag("targets", "Databases probed in --mode probe.").Default("20").Int()
		probeCap  = app.Flag("probe-max-connections", "probe.max_connections in --mode probe.").Default("10").Int()
		endpoints = app.Flag("endpoints", "TLS endpoints of the certs collector in --mode full.").Default("50").Int()
		idleWait  = app.Flag("idle-wait", "How long the binary runs before the idle reading.").Default("5s").Duration()
		env       = app.Flag("env", "Environment variables for the binary (GOGC=50, GOMEMLIMIT=40MiB, …).").Strings()
	)
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *scrapes < 1 || *rounds < 1 || *targets < 1 || *probeCap < 1 {
		fmt.Fprintln(os.Stderr, "--scrapes, --rounds, --targets and --probe-max-connections must be positive")
		return 2
	}
	if err := measure(*mode, *scrapes, *rounds, *targets, *probeCap, *endpoints, *idleWait, *env); err != nil {
		fmt.Fprintln(os.Stderr, "exporterrss:", err)
		return 1
	}
	return 0
}

// fixtures are the servers and files the binary is pointed at.
type fixtures struct {
	dir      string
	pg       *testenv.Postgres
	redis    *testenv.Redis
	tls      *httptest.Server
	ca, cert string
	authLog  string
	stop     []func()
}

func (f *fixtures) close() {
	for i := len(f.stop) - 1; i >= 0; i-- {
		f.stop[i]()
	}
}

func startFixtures(mode string, targets int) (*fixtures, error) {
	f := &fixtures{}
	dir, err := os.MkdirTemp("", "exporterrss-")
	if err != nil {
		return nil, err
	}
	f.dir = dir
	f.stop = append(f.stop, func() { os.RemoveAll(dir) })
	if f.pg, err = testenv.NewPostgres(testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements")); err != nil {
		f.close()
		return nil, err
	}
	f.stop = append(f.stop, f.pg.Stop)
	ctx := context.Background()
	sql := []string{"CREATE EXTENSION pg_stat_statements"}
	for i := range 30 {
		sql = append(sql, fmt.Sprintf("CREATE TABLE t%02d (id int, pad text)", i),
			fmt.Sprintf("INSERT INTO t%02d SELECT g, repeat('x', 100) FROM generate_series(1, %d) g", i, (i+1)*100))
	}
	if err := f.pg.Exec(ctx, "postgres", sql...); err != nil {
		f.close()
		return nil, err
	}
	if mode == "probe" {
		create := make([]string, targets)
		for i := range create {
			create[i] = fmt.Sprintf("CREATE DATABASE rss_%03d", i)
		}
		if err := f.pg.Exec(ctx, "postgres", create...); err != nil {
			f.close()
			return nil, err
		}
	}
	if mode != "full" {
		return f, nil
	}
	if f.redis, err = testenv.NewRedis(); err != nil {
		f.close()
		return nil, err
	}
	f.stop = append(f.stop, f.redis.Stop)
	now := time.Now()
	opts := func(cn string) certgen.Options {
		return certgen.Options{CommonName: cn, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, 30)}
	}
	leaf := opts("endpoint.warden.test")
	leaf.DNSNames, leaf.IPAddresses = []string{"endpoint.warden.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	chain, err := certgen.NewChain(certgen.ChainOptions{Root: opts("RSS Root"), Intermediate: opts("RSS Intermediate"), Leaf: leaf})
	if err != nil {
		f.close()
		return nil, err
	}
	f.tls = httptest.NewUnstartedServer(http.NotFoundHandler())
	f.tls.TLS = &tls.Config{Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)}}
	f.tls.StartTLS()
	f.stop = append(f.stop, f.tls.Close)
	f.ca = filepath.Join(dir, "ca.pem")
	f.cert = filepath.Join(dir, "chain.pem")
	f.authLog = filepath.Join(dir, "auth.log")
	var lines strings.Builder
	for i := range 1000 {
		ev := []string{"authentication_attempt", "authentication_success", "authentication_failed"}[i%3]
		fmt.Fprintf(&lines, `{"timestamp":%q,"level":"info","event":%q,"ip_address":"203.0.113.%d"}`+"\n", now.UTC().Format(time.RFC3339Nano), ev, i%250)
	}
	for path, data := range map[string][]byte{
		f.ca:      chain.Root.CertPEM(),
		f.cert:    certgen.ChainPEM(chain.Leaf, chain.Intermediate, chain.Root),
		f.authLog: []byte(lines.String()),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func (f *fixtures) config(mode string, targets, probeCap, endpoints int) string {
	switch mode {
	case "postgres":
		return fmt.Sprintf("postgres:\n  - {name: main, dsn: %q, statements: {enabled: true}}\n", f.pg.DSN("postgres"))
	case "probe":
		return fmt.Sprintf(`probe: {max_connections: %d}
modules:
  pg:
    type: postgres
    allowed_targets: ["127.0.0.1"]
    postgres: {dsn: "postgres://postgres@/postgres?sslmode=disable", max_connections: 1}
`, probeCap)
	}
	var eps strings.Builder
	for i := range endpoints {
		fmt.Fprintf(&eps, "      - {name: ep%03d, address: %q, server_name: endpoint.warden.test}\n", i, f.tls.Listener.Addr().String())
	}
	return fmt.Sprintf(`postgres:
  - {name: main, dsn: %q, statements: {enabled: true}}
redis:
  - {name: sessions, address: %q}
certs:
  endpoints:
    ca_file: %q
    targets:
%s  files:
    paths: [%q]
auth:
  files: [%q]
  from_beginning: true
  queries:
    - {name: tables, dsn: %q, sql: "SELECT count(*) FROM pg_tables"}
`, f.pg.DSN("postgres"), "redis://"+f.redis.Addr+"/0", f.ca, eps.String(), f.cert, f.authLog, f.pg.DSN("postgres"))
}

// procStatus reads the memory fields of /proc/PID/status, in KiB.
func procStatus(pid int) (map[string]int, error) {
	file, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, "kB") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "kB")))
		if err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func measure(mode string, scrapes, rounds, targets, probeCap, endpoints int, idleWait time.Duration, env []string) error {
	fmt.Fprintln(os.Stderr, "starting servers and building the binary …")
	f, err := startFixtures(mode, targets)
	if err != nil {
		return err
	}
	defer f.close()

	bin := filepath.Join(f.dir, "warden-exporter")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/warden-exporter")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build (run from the repository root): %w\n%s", err, out)
	}
	cfgPath := filepath.Join(f.dir, "warden-exporter.yml")
	if err := os.WriteFile(cfgPath, []byte(f.config(mode, targets, probeCap, endpoints)), 0o644); err != nil {
		return err
	}
	port, err := testenv.FreePort()
	if err != nil {
		return err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--web.listen-address=127.0.0.1:"+strconv.Itoa(port), "--log.level=error")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if err := testenv.WaitHTTP(context.Background(), base+"/-/ready", time.Minute, nil); err != nil {
		return fmt.Errorf("the exporter never became ready: %w", err)
	}
	pid := cmd.Process.Pid
	time.Sleep(idleWait)
	idle, err := procStatus(pid)
	if err != nil {
		return err
	}

	paths := []string{"/metrics"}
	if mode == "probe" {
		paths = paths[:0]
		for i := range targets {
			paths = append(paths, "/probe?"+url.Values{"module": {"pg"}, "target": {fmt.Sprintf("%s/rss_%03d", f.pg.Addr(), i)}}.Encode())
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: scrapes}}
	get := func(path string) (time.Duration, error) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", path, resp.Status)
		}
		return time.Since(start), nil
	}
	for _, p := range paths { // warm up: pools, prepared statements
		if _, err := get(p); err != nil {
			return err
		}
	}
	warm, err := procStatus(pid)
	if err != nil {
		return err
	}

	admin, err := pgx.Connect(context.Background(), f.pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	var (
		peakRSS, peakConns int
		stop               = make(chan struct{})
		sampler            sync.WaitGroup
	)
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if st, err := procStatus(pid); err == nil {
				peakRSS = max(peakRSS, st["VmRSS"])
			}
			var n int
			if admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden-exporter'").Scan(&n) == nil {
				peakConns = max(peakConns, n)
			}
		}
	})
	var (
		latencies []time.Duration
		mu        sync.Mutex
		failures  []error
	)
	start := time.Now()
	for range rounds {
		var wg sync.WaitGroup
		for i := range scrapes {
			wg.Go(func() {
				d, err := get(paths[i%len(paths)])
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, err)
					return
				}
				latencies = append(latencies, d)
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()
	after, err := procStatus(pid)
	if err != nil {
		return err
	}
	shared := sharedScrapes(client, base)

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	fmt.Printf("mode %s, %d bursts of %d concurrent scrapes", mode, rounds, scrapes)
	if mode == "probe" {
		fmt.Printf(" over %d databases, probe.max_connections %d", targets, probeCap)
	}
	if len(env) > 0 {
		fmt.Printf(", env %s", strings.Join(env, " "))
	}
	fmt.Println()
	fmt.Printf("idle (after %s): VmRSS %s (anon %s, file %s)\n", idleWait, mib(idle["VmRSS"]), mib(idle["RssAnon"]), mib(idle["RssFile"]))
	fmt.Printf("after warm-up:    VmRSS %s (anon %s, file %s)\n", mib(warm["VmRSS"]), mib(warm["RssAnon"]), mib(warm["RssFile"]))
	fmt.Printf("peak:             VmHWM %s, highest VmRSS sampled %s\n", mib(after["VmHWM"]), mib(peakRSS))
	fmt.Printf("scrapes:          %d ok, %d failed in %s; latency p50 %s p99 %s max %s; %s shared another's collection\n",
		len(latencies), len(failures), elapsed.Round(time.Millisecond), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pct(1).Round(time.Microsecond), shared)
	fmt.Printf("postgres:         at most %d exporter sessions at once\n", peakConns)
	if len(failures) > 0 {
		return fmt.Errorf("%d scrapes failed, first: %w", len(failures), failures[0])
	}
	return nil
}

// sharedScrapes reads warden_exporter_scrapes_shared_total from /metrics.
func sharedScrapes(client *http.Client, base string) string {
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "warden_exporter_scrapes_shared_total{") {
			out = append(out, strings.TrimPrefix(line, "warden_exporter_scrapes_shared_total"))
		}
	}
	return strings.Join(out, " ")
}
