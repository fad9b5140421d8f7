package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/internal/testenv"
)

func TestModuleConfig(t *testing.T) {
	cases := []struct {
		name, yml, wantErr string
	}{
		{"postgres module", `
modules:
  pg:
    type: postgres
    allowed_targets: ["*.db.example", "10.0.0.0/8", "db-1:6543"]
    postgres: {dsn: "postgres://warden@/postgres?sslmode=disable", max_connections: 1}
`, ""},
		{"key=value dsn", `
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {dsn: "user=warden dbname=postgres sslmode=disable"}}
`, ""},
		{"redis and tls modules", `
modules:
  cache: {type: redis, allowed_targets: ["*"], redis: {pool_size: 1}}
  cache-tls: {type: redis, allowed_targets: ["*"], redis: {tls: {insecure_skip_verify: true}}}
  web: {type: tls, allowed_targets: ["*"]}
  pg-tls: {type: tls, allowed_targets: ["*"], tls: {protocol: postgres, timeout: 1s}}
`, ""},
		{"missing type", `
modules:
  pg: {allowed_targets: ["*"], postgres: {dsn: "user=x"}}
`, "modules.pg.type: required"},
		{"unknown type", `
modules:
  pg: {type: mysql, allowed_targets: ["*"]}
`, `modules.pg.type: "mysql" is not one of`},
		{"block of another type", `
modules:
  pg: {type: redis, allowed_targets: ["*"], postgres: {dsn: "user=x"}}
`, "modules.pg.postgres: only allowed with type postgres"},
		{"no allowed targets", `
modules:
  pg: {type: postgres, postgres: {dsn: "user=x"}}
`, "modules.pg.allowed_targets: at least one host pattern is required"},
		{"bad pattern", `
modules:
  pg: {type: postgres, allowed_targets: ["db["], postgres: {dsn: "user=x"}}
`, "modules.pg.allowed_targets[0]:"},
		{"bad network", `
modules:
  pg: {type: postgres, allowed_targets: ["10.0.0.0/33"], postgres: {dsn: "user=x"}}
`, "modules.pg.allowed_targets[0]: \"10.0.0.0/33\": not an IP network"},
		{"postgres without dsn", `
modules:
  pg: {type: postgres, allowed_targets: ["*"]}
`, "modules.pg.postgres: required"},
		{"dsn with a host", `
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {dsn: "postgres://warden:s3cret@db:5432/postgres"}}
`, "modules.pg.postgres.dsn: must not name a host or port"},
		{"key=value dsn with a port", `
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {dsn: "user=warden port=5433"}}
`, "modules.pg.postgres.dsn: must not name a host, hostaddr or port"},
		{"postgres name", `
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {name: x, dsn: "user=x"}}
`, "modules.pg.postgres.name: not allowed"},
		{"backend validation names the field", `
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {dsn: "user=x", max_connections: 0}}
`, "modules.pg.postgres.max_connections: must be between 1 and 20"},
		{"redis address", `
modules:
  cache: {type: redis, allowed_targets: ["*"], redis: {address: "redis://x:6379"}}
`, "modules.cache.redis.address: not allowed"},
		{"tls protocol", `
modules:
  web: {type: tls, allowed_targets: ["*"], tls: {protocol: smtp}}
`, `modules.web.tls.protocol: "smtp" is not one of tls, postgres`},
		{"module over the connection cap", `
probe: {max_connections: 4}
modules:
  pg: {type: postgres, allowed_targets: ["*"], postgres: {dsn: "user=x", max_connections: 5}}
`, "modules.pg: a target of this module may hold 5 connections, more than probe.max_connections (4)"},
		{"bad module name", `
modules:
  "a b": {type: tls, allowed_targets: ["*"]}
`, "modules.a b: a module name is"},
		{"probe limits", `
probe: {max_connections: 0}
modules:
  web: {type: tls, allowed_targets: ["*"]}
`, "probe.max_connections: must be at least 1"},
		{"unknown module field", `
modules:
  web: {type: tls, allowed_targets: ["*"], targets: [x]}
`, "field targets not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.yml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if cfg.Probe != DefaultProbeConfig {
					t.Errorf("probe = %+v, want the defaults %+v", cfg.Probe, DefaultProbeConfig)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error quotes the password: %v", err)
			}
		})
	}
}

func TestParseProbeTargetAndAllowedTargets(t *testing.T) {
	m := Module{AllowedTargets: []string{"*.db.example", "10.1.0.0/16", "cache-?:6380", "[::1]:5432"}}
	cases := []struct {
		typ, target string
		want        string // canonical form; "" when refused as malformed
		allowed     bool
	}{
		{"postgres", "pg1.db.example", "pg1.db.example:5432", true},
		{"postgres", "PG1.DB.example:6000/app", "pg1.db.example:6000/app", true},
		{"postgres", "10.1.2.3/app", "10.1.2.3:5432/app", true},
		{"postgres", "10.2.2.3", "10.2.2.3:5432", false},
		{"postgres", "db.example", "db.example:5432", false},
		{"postgres", "evil.com", "evil.com:5432", false},
		{"postgres", "pg1.db.example.evil.com", "pg1.db.example.evil.com:5432", false},
		{"postgres", "[::1]:5432", "[::1]:5432", true},
		{"postgres", "::1", "[::1]:5432", true},
		{"redis", "cache-1:6380", "cache-1:6380", true},
		{"redis", "cache-1", "cache-1:6379", false},
		{"redis", "cache-1:6380/3", "cache-1:6380/3", true},
		{"redis", "cache-1:6380/x", "", false},
		{"tls", "web.db.example:443", "web.db.example:443", true},
		{"tls", "web.db.example", "", false},
		{"tls", "web.db.example:443/x", "", false},
		{"postgres", "", "", false},
		{"postgres", "postgres://u:p@h/db", "", false},
		{"postgres", "u@h", "", false},
		{"postgres", "h:0", "", false},
		{"postgres", "h:5432/", "", false},
		{"postgres", "h?sslmode=disable", "", false},
		{"postgres", ":5432", "", false},
		{"postgres", strings.Repeat("a", 600), "", false},
	}
	for _, tc := range cases {
		t.Run(tc.typ+"/"+tc.target, func(t *testing.T) {
			pt, err := parseProbeTarget(tc.typ, tc.target)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("parsed as %s, want an error", pt)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pt.String() != tc.want {
				t.Errorf("canonical form %q, want %q", pt, tc.want)
			}
			if got := m.allows(pt); got != tc.allowed {
				t.Errorf("allowed = %t, want %t", got, tc.allowed)
			}
		})
	}
}

func TestPostgresModuleTargetReplacesTheAddress(t *testing.T) {
	cases := []struct{ dsn, target, want string }{
		{"postgres://warden@/postgres?sslmode=disable", "db:6000", "postgres://warden@db:6000/postgres?sslmode=disable"},
		{"postgres://warden@/postgres?sslmode=disable", "db/app", "postgres://warden@db:5432/app?sslmode=disable"},
		{"user=warden sslmode=disable", "db/it's", `user=warden sslmode=disable host='db' port=5432 dbname='it\'s'`},
	}
	for _, tc := range cases {
		pgt := postgres.DefaultTarget()
		pgt.DSN = tc.dsn
		m := Module{Type: "postgres", Postgres: &pgt}
		pt, err := parseProbeTarget("postgres", tc.target)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.postgresTarget(pt)
		if err != nil {
			t.Fatal(err)
		}
		if got.DSN != tc.want || got.Name != pt.String() {
			t.Errorf("%s + %s: dsn %q name %q, want %q name %q", tc.dsn, tc.target, got.DSN, got.Name, tc.want, pt)
		}
	}
}

// probeExporter builds an exporter from yml for the probe tests.
func probeExporter(t *testing.T, yml string) (*Exporter, *httptest.Server) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	set, err := Build(t.Context(), cfg, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := New(discard(), set, cfg.Scrape, prometheus.NewRegistry())
	mux := http.NewServeMux()
	mux.Handle("/metrics", e)
	mux.HandleFunc("/probe", e.ServeProbe)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e, srv
}

// probe fetches /probe and returns the status, the body and, for a 200,
// the parsed families.
func probe(t testing.TB, srv *httptest.Server, module, target string) (int, string, map[string]*dto.MetricFamily) {
	t.Helper()
	u := srv.URL + "/probe?" + url.Values{"module": {module}, "target": {target}}.Encode()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(body), nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse probe answer: %v\n%s", err, body)
	}
	return resp.StatusCode, string(body), mfs
}

// familyValue is the value of the series of name whose labels include want.
func familyValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func TestProbeRefusesWhatItMustNotProbe(t *testing.T) {
	_, srv := probeExporter(t, `
modules:
  pg: {type: postgres, allowed_targets: ["*.db.example", "127.0.0.1"], postgres: {dsn: "user=warden"}}
`)
	cases := []struct {
		name, module, target, want string
	}{
		{"no module", "", "a.db.example", "module parameter is required"},
		{"unknown module", "mysql", "a.db.example", `unknown module "mysql"`},
		{"no target", "pg", "", "target parameter: required"},
		{"target outside the allowed hosts", "pg", "10.0.0.1:5432", `target "10.0.0.1:5432" is not allowed by module "pg"`},
		{"look-alike host", "pg", "a.db.example.evil.com", "is not allowed by module"},
		{"credentials in the target", "pg", "postgres://u:p@a.db.example/x", "without scheme, credentials or parameters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := probe(t, srv, tc.module, tc.target)
			if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want 400 with %q", status, body, tc.want)
			}
		})
	}
}

// probeDBSeq makes database names unique on the shared server, also across
// -count repetitions.
var probeDBSeq atomic.Int32

// probeDBPrefix is a fresh database name prefix for one test.
func probeDBPrefix(base string) string {
	return fmt.Sprintf("%s%d_", base, probeDBSeq.Add(1))
}

// pgModule is a PostgreSQL module for the shared test server.
func pgModule(name string, maxConns int) string {
	return fmt.Sprintf(`  %s: {type: postgres, allowed_targets: ["127.0.0.1"], postgres: {dsn: "postgres://postgres@/postgres?sslmode=disable", max_connections: %d}}
`, name, maxConns)
}

func TestProbePostgresReportsTheTargetOrItsAbsence(t *testing.T) {
	pg := sharedPG.Get(t)
	db := probeDBPrefix("probe") + "app"
	pg.CreateDatabase(t, db)
	_, srv := probeExporter(t, "modules:\n"+pgModule("pg", 1))

	target := pg.Addr() + "/" + db
	status, body, mfs := probe(t, srv, "pg", target)
	if status != http.StatusOK {
		t.Fatalf("probe: %d %s", status, body)
	}
	if v, ok := familyValue(mfs, "pg_up", map[string]string{"target": target}); !ok || v != 1 {
		t.Fatalf("pg_up{target=%q} = %v (present %t), want 1\n%s", target, v, ok, body)
	}
	if _, ok := familyValue(mfs, "pg_database_size_bytes", map[string]string{"target": target, "datname": db}); !ok {
		t.Errorf("no pg_database_size_bytes for %s\n%s", db, body)
	}
	// A target naming a database reports that database, not the server's
	// every other one.
	if n := len(mfs["pg_database_size_bytes"].GetMetric()); n != 1 {
		t.Errorf("%d pg_database_size_bytes series, want only %s's", n, db)
	}
	if v, ok := familyValue(mfs, "warden_exporter_collector_success", map[string]string{"collector": "probe/pg"}); !ok || v != 1 {
		t.Errorf("collector success = %v (present %t), want 1", v, ok)
	}
	// The tables reported are the target database's.
	if mfs["warden_exporter_probe_targets"] != nil {
		t.Errorf("the exporter's own metrics belong on /metrics, not in a probe")
	}

	// A target that does not answer is down, like a configured one.
	dead := fmt.Sprintf("127.0.0.1:%d/%s", freePort(t), db)
	status, body, mfs = probe(t, srv, "pg", dead)
	if status != http.StatusOK {
		t.Fatalf("probe of a dead target: %d %s", status, body)
	}
	if v, ok := familyValue(mfs, "pg_up", map[string]string{"target": dead}); !ok || v != 0 {
		t.Fatalf("pg_up of a dead target = %v (present %t), want 0\n%s", v, ok, body)
	}
	if v, _ := familyValue(mfs, "warden_exporter_collector_success", map[string]string{"collector": "probe/pg"}); v != 0 {
		t.Errorf("collector success of a dead target = %v, want 0", v)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeRedisAndTLSTargets(t *testing.T) {
	rs := sharedRedis.Get(t)
	web := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	_, srv := probeExporter(t, `
modules:
  cache: {type: redis, allowed_targets: ["127.0.0.1"], redis: {pool_size: 1}}
  web: {type: tls, allowed_targets: ["127.0.0.1"]}
`)
	target := rs.Addr + "/13"
	status, body, mfs := probe(t, srv, "cache", target)
	if status != http.StatusOK {
		t.Fatalf("redis probe: %d %s", status, body)
	}
	if v, ok := familyValue(mfs, "redis_up", map[string]string{"target": target}); !ok || v != 1 {
		t.Errorf("redis_up{target=%q} = %v (present %t), want 1\n%s", target, v, ok, body)
	}

	webAddr := strings.TrimPrefix(web.URL, "https://")
	status, body, mfs = probe(t, srv, "web", webAddr)
	if status != http.StatusOK {
		t.Fatalf("tls probe: %d %s", status, body)
	}
	if v, ok := familyValue(mfs, "warden_certs_source_success", map[string]string{"source": webAddr}); !ok || v != 1 {
		t.Errorf("warden_certs_source_success{source=%q} = %v (present %t), want 1\n%s", webAddr, v, ok, body)
	}
	if _, ok := familyValue(mfs, "x509_cert_not_after", map[string]string{"source": webAddr}); !ok {
		t.Errorf("no x509_cert_not_after for the endpoint\n%s", body)
	}
}

// pgExporterSessions counts the exporter's sessions in the given databases.
func pgExporterSessions(ctx context.Context, conn *pgx.Conn, prefix string) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'warden-exporter' AND datname LIKE $1`, prefix+"%").Scan(&n)
	return n, err
}

// pgWaitNoSessions waits up to a minute for the exporter's sessions in the
// databases named prefix* to end.
func pgWaitNoSessions(ctx context.Context, conn *pgx.Conn, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return testenv.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		n, err := pgExporterSessions(ctx, conn, prefix)
		return n == 0, err
	})
}

// TestProbeBurstNeverHoldsMoreThanTheCap is postgres_exporter's
// multi-target burst: 100 concurrent probes of 20 databases with room for
// 6 connections. PostgreSQL's own pg_stat_activity, sampled throughout,
// never shows more than the cap; every probe is answered; once idle, every
// connection is released.
func TestProbeBurstNeverHoldsMoreThanTheCap(t *testing.T) {
	pg := sharedPG.Get(t)
	const (
		targets = 20
		probes  = 100
		limit   = 6
	)
	prefix := probeDBPrefix("burst")
	for i := range targets {
		pg.CreateDatabase(t, fmt.Sprintf("%s%02d", prefix, i))
	}
	e, srv := probeExporter(t, fmt.Sprintf("probe: {max_connections: %d, idle_timeout: 400ms}\nmodules:\n%s", limit, pgModule("pg", 2)))

	ctx := t.Context()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	var (
		peak     int
		samples  int
		stop     = make(chan struct{})
		sampling sync.WaitGroup
	)
	sampling.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := pgExporterSessions(ctx, admin, prefix)
			if err != nil {
				t.Error(err)
				return
			}
			samples++
			peak = max(peak, n)
		}
	})

	var wg sync.WaitGroup
	failures := make(chan string, probes)
	for i := range probes {
		wg.Go(func() {
			target := fmt.Sprintf("%s/%s%02d", pg.Addr(), prefix, i%targets)
			status, body, mfs := probe(t, srv, "pg", target)
			if status != http.StatusOK {
				failures <- fmt.Sprintf("%s: %d %s", target, status, body)
				return
			}
			if v, _ := familyValue(mfs, "pg_up", map[string]string{"target": target}); v != 1 {
				failures <- fmt.Sprintf("%s: pg_up %v", target, v)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampling.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	t.Logf("peak sessions %d over %d samples (cap %d)", peak, samples, limit)
	if peak > limit {
		t.Errorf("PostgreSQL saw %d exporter sessions at once, more than probe.max_connections=%d", peak, limit)
	}
	if peak == 0 {
		t.Errorf("no exporter session was ever seen: the sampling proves nothing")
	}

	// Every target goes idle: the sweep closes their pools.
	if err := pgWaitNoSessions(ctx, admin, prefix); err != nil {
		t.Fatalf("sessions still open after the idle timeout: %v", err)
	}
	// The bookkeeping follows once the pools' Close calls return.
	var kept, reserved int
	var idle uint64
	testenv.WaitFor(t, time.Minute, "the cache to release every target", func() bool {
		e.probes.mu.Lock()
		defer e.probes.mu.Unlock()
		kept, reserved, idle = e.probes.lru.Len(), e.probes.reserved, e.probes.evictions[evictIdle]
		return kept == 0 && reserved == 0
	})
	if idle == 0 {
		t.Errorf("no idle eviction counted")
	}
}

func TestProbeReloadKeepsUnchangedModulesAndClosesTheOthers(t *testing.T) {
	pg := sharedPG.Get(t)
	prefix := probeDBPrefix("reload")
	dbA, dbB := prefix+"a", prefix+"b"
	pg.CreateDatabase(t, dbA)
	pg.CreateDatabase(t, dbB)
	e, srv := probeExporter(t, "modules:\n"+pgModule("keep", 1)+pgModule("change", 1))
	for _, m := range []string{"keep", "change"} {
		db := map[string]string{"keep": dbA, "change": dbB}[m]
		if status, body, _ := probe(t, srv, m, pg.Addr()+"/"+db); status != http.StatusOK {
			t.Fatalf("probe %s: %d %s", m, status, body)
		}
	}
	before, _ := e.probes.lru.Peek(e.Current().modules["keep"].key + "\x00" + pg.Addr() + "/" + dbA)
	if before == nil {
		t.Fatal("the probed target of module keep is not kept")
	}

	cfg, err := ParseConfig([]byte("modules:\n" + pgModule("keep", 1) + pgModule("change", 2)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := Build(t.Context(), cfg, discard(), e.Current())
	if err != nil {
		t.Fatal(err)
	}
	e.Swap(set, cfg.Scrape).Retire()

	e.probes.mu.Lock()
	keys := e.probes.lru.Keys()
	reloadEvictions := e.probes.evictions[evictReload]
	e.probes.mu.Unlock()
	if len(keys) != 1 || reloadEvictions != 1 {
		t.Fatalf("after the reload %d targets kept and %d reload evictions, want 1 and 1", len(keys), reloadEvictions)
	}
	after, _ := e.probes.lru.Peek(keys[0])
	if after != before {
		t.Errorf("the unchanged module's target was rebuilt")
	}
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if err := pgWaitNoSessions(ctx, admin, dbB); err != nil {
		t.Errorf("the changed module's pool still holds sessions: %v", err)
	}
	if status, body, _ := probe(t, srv, "change", pg.Addr()+"/"+dbB); status != http.StatusOK {
		t.Fatalf("probe after reload: %d %s", status, body)
	}
}

// closeCounter is a collector that counts its Close calls.
type closeCounter struct {
	fakeCollector
	closed *atomic.Int32
}

func (c closeCounter) Close() error {
	c.closed.Add(1)
	return nil
}

// TestProbeCacheEvictsOnlyWhatANewTargetNeeds: at the cap, a new target
// closes the least recently used idle target and no other; a target in use
// is never closed under its probe, and a new target waits for room until
// its deadline.
func TestProbeCacheEvictsOnlyWhatANewTargetNeeds(t *testing.T) {
	c := newProbeCache(ProbeConfig{MaxConnections: 4, MaxTargets: 100, IdleTimeout: time.Hour}, discard())
	t.Cleanup(c.close)
	var closed atomic.Int32
	build := func() (Collector, error) { return closeCounter{closed: &closed}, nil }
	ctx := t.Context()
	var entries []*probeEntry
	for i := range 4 {
		e, err := c.acquire(ctx, fmt.Sprint(i), "m", 1, build)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	for _, e := range entries[:3] {
		c.release(e) // 0, 1, 2 idle; 3 in use
	}
	if _, err := c.acquire(ctx, "4", "m", 1, build); err != nil {
		t.Fatal(err)
	}
	if n := closed.Load(); n != 1 || c.evictions[evictCapacity] != 1 {
		t.Fatalf("%d closed, %d capacity evictions for one new target, want 1 and 1", n, c.evictions[evictCapacity])
	}
	if _, ok := c.lru.Peek("0"); ok {
		t.Errorf("the least recently used target 0 is still kept")
	}
	// 1 and 2 idle, 3 and 4 in use: a target of cost 3 needs 1 and 2 and
	// one of those in use, so it waits, until its deadline.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.acquire(short, "big", "m", 3, build); !errors.Is(err, errProbeCapacity) {
		t.Fatalf("acquire beyond the cap: %v, want %v", err, errProbeCapacity)
	}
	if n := closed.Load(); n > 3 {
		t.Errorf("%d collectors closed; a target in use was closed", n)
	}
	c.release(entries[3])
	if _, err := c.acquire(ctx, "big", "m", 3, build); err != nil {
		t.Fatalf("acquire once room was released: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reserved > 4 {
		t.Errorf("%d connections reserved, more than the cap of 4", c.reserved)
	}
}
