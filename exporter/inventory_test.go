package exporter

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/inventory"
	"github.com/warden-sre/warden/internal/testenv"
)

// inventoryRedisDB is this test's database on the shared Redis server.
const inventoryRedisDB = 14

// inventoryNotScraped are the exporter metrics this test cannot make appear,
// with the reason. Every other exporter metric in internal/inventory,
// conditional or not, is set up below and must be in the scrape.
var inventoryNotScraped = map[string]string{
	"redis_master_link_up":                                         "needs a Redis replica",
	"redis_master_last_io_seconds_ago":                             "needs a Redis replica",
	"redis_master_sync_in_progress":                                "needs a Redis replica",
	"warden_exporter_config_last_reload_successful":                "registered by cmd/warden-exporter",
	"warden_exporter_config_last_reload_success_timestamp_seconds": "registered by cmd/warden-exporter",
	"warden_exporter_build_info":                                   "registered by cmd/warden-exporter",
	"warden_certs_served_stale":                                    "needs certs.kubernetes and an API server: TestCertsEndpointsAreComparedWithSecrets",
}

// TestScrapeProducesEveryInventoryMetric builds the exporter from a
// configuration with every collector against real servers and files, scrapes
// it once and checks that every metric the rules and dashboards may rely on
// (internal/inventory) is there: renaming or dropping one fails here, not in
// production.
func TestScrapeProducesEveryInventoryMetric(t *testing.T) {
	ctx := t.Context()
	pg, rs := sharedPG.Get(t), sharedRedis.Get(t)
	const db = "inventory"
	dsn := pg.CreateDatabase(t, db)
	if err := pg.Exec(ctx, db,
		"CREATE EXTENSION pg_stat_statements",
		"CREATE TABLE sessions (id int PRIMARY KEY, user_id text)",
		"INSERT INTO sessions SELECT g, 'u' || g FROM generate_series(1, 100) g",
		"DELETE FROM sessions WHERE id <= 10",
		"VACUUM ANALYZE sessions",
		"SELECT count(*) FROM sessions",
	); err != nil {
		t.Fatal(err)
	}

	// A streaming replica of the server, for the metrics only replicas
	// report; taken after the setup, so it has the database too.
	replica := testenv.StartPostgresReplica(t, pg)

	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr, DB: inventoryRedisDB, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	t.Cleanup(func() { _ = rc.Close() })
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "session:1", "u-1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Get(ctx, "session:1").Err(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	chain := inventoryChain(t)
	certFile := inventoryWriteFile(t, dir, "chain.pem", certgen.ChainPEM(chain.Leaf, chain.Intermediate, chain.Root))
	caFile := inventoryWriteFile(t, dir, "ca.pem", chain.Root.CertPEM())
	tlsServer := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsServer.TLS = &tls.Config{Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)}}
	tlsServer.StartTLS()
	t.Cleanup(tlsServer.Close)
	endpoint := tlsServer.Listener.Addr().String()
	var lines strings.Builder
	for _, ev := range []string{"authentication_attempt", "authentication_success", "authentication_attempt", "authentication_failed"} {
		fmt.Fprintf(&lines, `{"timestamp":%q,"level":"info","event":%q,"ip_address":"203.0.113.7"}`+"\n", time.Now().UTC().Format(time.RFC3339Nano), ev)
	}
	lines.WriteString("not json\n")
	logFile := inventoryWriteFile(t, dir, "auth.log", []byte(lines.String()))

	cfg, err := ParseConfig(fmt.Appendf(nil, `
postgres:
- name: main
  dsn: %q
  statements: {enabled: true}
- name: replica
  dsn: %q
redis:
- name: sessions
  address: %q
certs:
  endpoints:
    ca_file: %q
    targets:
    - {name: auth, address: %q, server_name: auth.warden.test}
  files:
    paths: [%q, %q]
auth:
  files: [%q]
  from_beginning: true
  poll_interval: 10ms
  queries:
  - name: active_sessions
    dsn: %q
    sql: SELECT count(*) FROM sessions
`, dsn, replica.DSN(db), "redis://"+rs.Addr+"/"+strconv.Itoa(inventoryRedisDB), caFile, endpoint, certFile, filepath.Join(dir, "missing.pem"), logFile, dsn))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	set, err := Build(ctx, cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { _ = set.Close() })

	// The auth collector follows its file in the background (its line
	// counters exist before the first poll; the window's signals only once
	// the lines are read), and the replica reports its lag and last receipt
	// once its WAL receiver has connected: scrape until all are there.
	var scraped map[string]bool
	deadline := time.Now().Add(60 * time.Second)
	for {
		scraped = inventoryScrape(t, set)
		if scraped["warden_auth_log_lines_total"] && scraped["warden_auth_log_lines_invalid_total"] &&
			scraped["warden_auth_source_pattern"] && scraped["warden_auth_window_success_ratio"] &&
			scraped["pg_replication_lag_seconds"] && scraped["warden_postgres_wal_receiver_last_receipt_timestamp_seconds"] ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, m := range inventory.BySource(inventory.Exporter) {
		if reason, skip := inventoryNotScraped[m.Name]; skip {
			t.Logf("%s: not checked (%s)", m.Name, reason)
			continue
		}
		if !scraped[m.Name] {
			t.Errorf("%s (collector %s) is in internal/inventory but not in the scrape; rules and dashboards rely on it", m.Name, m.Collector)
		}
	}
	for _, name := range inventorySortedNames(scraped) {
		if _, ok := inventory.Lookup(name); !ok {
			t.Logf("%s is scraped but not in internal/inventory; add it there before a rule or dashboard uses it", name)
		}
	}
}

// inventoryScrape runs one scrape and returns the metric names in it.
func inventoryScrape(t *testing.T, set *Set) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapeResult{metrics: scrape(ctx, slog.New(slog.DiscardHandler), set.Collectors), timeout: 10 * time.Second})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

func inventorySortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// inventoryChain is a root → intermediate → leaf chain for the certificate
// sources, the leaf valid for 127.0.0.1 and auth.warden.test.
func inventoryChain(t *testing.T) *certgen.Chain {
	t.Helper()
	now := time.Now()
	opts := func(cn string) certgen.Options {
		return certgen.Options{CommonName: cn, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, 30)}
	}
	leaf := opts("auth.warden.test")
	leaf.DNSNames, leaf.IPAddresses = []string{"auth.warden.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	c, err := certgen.NewChain(certgen.ChainOptions{Root: opts("Warden Inventory Root"), Intermediate: opts("Warden Inventory Intermediate"), Leaf: leaf})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func inventoryWriteFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
