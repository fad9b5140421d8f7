package redis

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/secret"
	"github.com/warden-sre/warden/internal/testenv"
)

// withDefaults fills the fields a test leaves zero from DefaultTarget, as
// decoding a configuration file would.
func withDefaults(t Target) Target {
	d := DefaultTarget()
	if t.PoolSize == 0 {
		t.PoolSize = d.PoolSize
	}
	if t.DialTimeout == 0 {
		t.DialTimeout = d.DialTimeout
	}
	return t
}

// parseTargets decodes a configuration file's redis section and validates
// each target as the exporter does.
func parseTargets(yml string) ([]Target, error) {
	var file struct {
		Redis []Target `yaml:"redis"`
	}
	if err := exportertest.DecodeStrict(yml, &file); err != nil {
		return nil, err
	}
	for i := range file.Redis {
		if err := file.Redis[i].Validate(fmt.Sprintf("redis[%d]", i)); err != nil {
			return nil, err
		}
	}
	return file.Redis, nil
}

// newTestRedisCollector builds a collector that is closed when the test
// ends; logs go to the returned buffer.
func newTestRedisCollector(t testing.TB, target Target) (*Collector, *redisSafeBuffer) {
	t.Helper()
	if target.Name == "" {
		target.Name = "test"
	}
	logs := &redisSafeBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(withDefaults(target), logger)
	if err != nil {
		t.Fatalf("new redis collector: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, logs
}

// redisCollect runs one Collect with timeout and returns the metric
// families, how long Collect took and Collect's error.
func redisCollect(t testing.TB, c exportertest.Collector, timeout time.Duration) (map[string]*dto.MetricFamily, time.Duration, error) {
	t.Helper()
	a := &exportertest.Adapter{C: c, Timeout: timeout}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a)
	start := time.Now()
	mfs, err := reg.Gather()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, took, a.LastErr()
}

// redisValue returns the value of the one series of family name whose
// labels include want; ok is false unless exactly one matched.
func redisValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	var (
		v float64
		n int
	)
	for _, m := range mfs[name].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, w := range want {
			if labels[k] != w {
				match = false
			}
		}
		if !match {
			continue
		}
		n++
		switch {
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		}
	}
	return v, n == 1
}

// redisUp returns redis_up, failing the test when it is missing.
func redisUp(t testing.TB, mfs map[string]*dto.MetricFamily) float64 {
	t.Helper()
	v, ok := redisValue(mfs, "redis_up", map[string]string{"target": "test"})
	if !ok {
		t.Fatalf("redis_up missing")
	}
	return v
}

// redisClient is a plain client for setting up a test, closed at the end.
func redisClient(t testing.TB, addr string, db int) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, DB: db, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// redisSafeBuffer is a log sink safe for concurrent writes.
type redisSafeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *redisSafeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *redisSafeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// redisCollectAndCompare compares the named families of one scrape of c
// with the exposition text want.
func redisCollectAndCompare(t *testing.T, c exportertest.Collector, want string) {
	t.Helper()
	a := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
	if err := testutil.CollectAndCompare(a, strings.NewReader(want), redisMetricNames(want)...); err != nil {
		t.Error(err)
	}
	if err := a.LastErr(); err != nil {
		t.Errorf("collect: %v", err)
	}
}

func TestRedisCollectorReportsKeysOfItsDatabaseOnSharedServer(t *testing.T) {
	const db = 5 // this test's database on the shared server
	rc := redisClient(t, sharedRedis.Get(t).Addr, db)
	ctx := context.Background()
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		var ttl time.Duration
		if i < 5 {
			ttl = time.Hour
		}
		if err := rc.Set(ctx, fmt.Sprintf("k%d", i), "v", ttl).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := newTestRedisCollector(t, Target{Address: "redis://" + sharedRedis.Get(t).Addr + "/" + strconv.Itoa(db)})
	mfs, _, err := redisCollect(t, c, 5*time.Second)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	if up := redisUp(t, mfs); up != 1 {
		t.Fatalf("redis_up = %v", up)
	}
	for _, tt := range []struct {
		name string
		want float64
	}{
		{"redis_db_keys", 25},
		{"redis_db_keys_expiring", 5},
	} {
		got, ok := redisValue(mfs, tt.name, map[string]string{"target": "test", "db": "db5"})
		if !ok || got != tt.want {
			t.Errorf("%s{db=\"db5\"} = %v (found %v), want %v", tt.name, got, ok, tt.want)
		}
	}
	// avg_ttl is an estimate the server refreshes in its expire cycle; it
	// may still be 0 this early.
	if ttl, ok := redisValue(mfs, "redis_db_avg_ttl_seconds", map[string]string{"db": "db5"}); !ok || ttl < 0 || ttl > 3600 {
		t.Errorf("redis_db_avg_ttl_seconds{db=\"db5\"} = %v (found %v), want 0-3600", ttl, ok)
	}

	// The instance labels come from INFO; the version must be the one
	// the server binary reports.
	out, err := exec.Command(redisServerBinary(t), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`v=(\S+)`).FindSubmatch(out)
	if version == nil {
		t.Fatalf("no version in %q", out)
	}
	want := map[string]string{"target": "test", "role": "master", "redis_version": string(version[1]), "maxmemory_policy": "noeviction"}
	if v, ok := redisValue(mfs, "redis_instance_info", want); !ok || v != 1 {
		t.Errorf("redis_instance_info%v missing; got %v", want, mfs["redis_instance_info"])
	}
	if _, ok := redisValue(mfs, "redis_master_link_up", nil); ok {
		t.Error("redis_master_link_up present on a master")
	}
	if d, ok := redisValue(mfs, "warden_redis_ping_duration_seconds", nil); !ok || d <= 0 || d > 1 {
		t.Errorf("warden_redis_ping_duration_seconds = %v (found %v)", d, ok)
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if !redisHasLabel(m, "target", "test") {
				t.Errorf("%s has no target label", name)
			}
		}
	}
}

func redisHasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

func redisServerBinary(t testing.TB) string {
	t.Helper()
	bin, err := testenv.LookBinary("redis-server", "WARDEN_REDIS_SERVER", "apt-get install -y redis-server (or scripts/install-deps.sh)")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestRedisCollectorGoldenServerStats checks the stable part of a scrape
// of a dedicated server after a known sequence of commands.
func TestRedisCollectorGoldenServerStats(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t)
	rc := redisClient(t, r.Addr, 0)
	ctx := context.Background()
	mustRedis := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustRedis(rc.ConfigSet(ctx, "maxmemory", "64mb").Err())

	// One rejected connection: lower maxclients to the one client we
	// have, connect once more, then lift the limit again.
	mustRedis(rc.ConfigSet(ctx, "maxclients", "1").Err())
	conn, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || !strings.Contains(line, "max number of clients") {
		t.Fatalf("connection over maxclients: %q, %v", line, err)
	}
	mustRedis(rc.ConfigSet(ctx, "maxclients", "100").Err())

	// Three hits, two misses.
	mustRedis(rc.Set(ctx, "present", "1", 0).Err())
	for range 3 {
		mustRedis(rc.Get(ctx, "present").Err())
	}
	for range 2 {
		if err := rc.Get(ctx, "absent").Err(); err != goredis.Nil {
			t.Fatalf("GET absent: %v", err)
		}
	}

	c, _ := newTestRedisCollector(t, Target{Address: r.Addr})
	redisCollectAndCompare(t, c, `
# HELP redis_up Whether the last scrape of the Redis server succeeded (1) or not (0).
# TYPE redis_up gauge
redis_up{target="test"} 1
# HELP redis_memory_max_bytes The maxmemory setting in bytes; 0 means no limit.
# TYPE redis_memory_max_bytes gauge
redis_memory_max_bytes{target="test"} 6.7108864e+07
# HELP redis_config_maxclients The maxclients setting: the most client connections the server accepts.
# TYPE redis_config_maxclients gauge
redis_config_maxclients{target="test"} 100
# HELP redis_rejected_connections_total Connections refused because of the maxclients limit.
# TYPE redis_rejected_connections_total counter
redis_rejected_connections_total{target="test"} 1
# HELP redis_keyspace_hits_total Successful lookups of keys.
# TYPE redis_keyspace_hits_total counter
redis_keyspace_hits_total{target="test"} 3
# HELP redis_keyspace_misses_total Failed lookups of keys.
# TYPE redis_keyspace_misses_total counter
redis_keyspace_misses_total{target="test"} 2
# HELP redis_evicted_keys_total Keys evicted because of the maxmemory limit.
# TYPE redis_evicted_keys_total counter
redis_evicted_keys_total{target="test"} 0
# HELP redis_expired_keys_total Keys removed because their TTL ran out.
# TYPE redis_expired_keys_total counter
redis_expired_keys_total{target="test"} 0
# HELP redis_blocked_clients Clients waiting in a blocking call (BLPOP, XREAD, WAIT...).
# TYPE redis_blocked_clients gauge
redis_blocked_clients{target="test"} 0
# HELP redis_connected_clients Client connections, excluding replicas.
# TYPE redis_connected_clients gauge
redis_connected_clients{target="test"} 2
# HELP redis_connected_slaves Replicas connected to this server.
# TYPE redis_connected_slaves gauge
redis_connected_slaves{target="test"} 0
# HELP redis_rdb_last_bgsave_status Whether the last RDB background save succeeded (1) or failed (0).
# TYPE redis_rdb_last_bgsave_status gauge
redis_rdb_last_bgsave_status{target="test"} 1
# HELP redis_aof_enabled Whether append-only-file persistence is on (1) or off (0).
# TYPE redis_aof_enabled gauge
redis_aof_enabled{target="test"} 0
# HELP redis_loading_dump_file Whether the server is loading a dump file (1) or not (0).
# TYPE redis_loading_dump_file gauge
redis_loading_dump_file{target="test"} 0
# HELP redis_db_keys Keys in the database.
# TYPE redis_db_keys gauge
redis_db_keys{db="db0",target="test"} 1
# HELP redis_db_keys_expiring Keys with a TTL in the database.
# TYPE redis_db_keys_expiring gauge
redis_db_keys_expiring{db="db0",target="test"} 0
`)
}

func TestRedisCollectorCountsEvictedKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t, testenv.WithRedisArgs("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"))
	rc := redisClient(t, r.Addr, 0)
	ctx := context.Background()
	value := strings.Repeat("x", 1024)
	for batch := 0; ; batch++ {
		if batch == 50 {
			t.Fatal("no key evicted after writing 10 MB into a 2 MB server")
		}
		pipe := rc.Pipeline()
		for i := range 200 {
			pipe.Set(ctx, fmt.Sprintf("key:%d:%d", batch, i), value, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if redisServerStat(t, rc, "stats", "evicted_keys") > 0 {
			break
		}
	}
	c, _ := newTestRedisCollector(t, Target{Address: r.Addr})
	// The server stays at its limit, so any command (INFO included) may
	// evict one more key: the scrape's count lies between the counts read
	// just before and just after it.
	before := redisServerStat(t, rc, "stats", "evicted_keys")
	mfs, _, err := redisCollect(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	after := redisServerStat(t, rc, "stats", "evicted_keys")
	if got, _ := redisValue(mfs, "redis_evicted_keys_total", nil); got < before || got > after || got == 0 {
		t.Errorf("redis_evicted_keys_total = %v, server says %v before and %v after", got, before, after)
	}
	if got, _ := redisValue(mfs, "redis_memory_max_bytes", nil); got != 2<<20 {
		t.Errorf("redis_memory_max_bytes = %v", got)
	}
	if _, ok := redisValue(mfs, "redis_instance_info", map[string]string{"maxmemory_policy": "allkeys-lru"}); !ok {
		t.Errorf("redis_instance_info without maxmemory_policy=allkeys-lru: %v", mfs["redis_instance_info"])
	}
}

// redisServerStat reads one numeric field of INFO section directly.
func redisServerStat(t testing.TB, rc *goredis.Client, section, field string) float64 {
	t.Helper()
	s, err := rc.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:([0-9.]+)\r?$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in INFO %s", field, section)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestRedisCollectorReportsReplication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	master := testenv.StartRedis(t, testenv.WithRedisArgs("--repl-diskless-sync-delay", "0"))
	host, port, _ := net.SplitHostPort(master.Addr)
	replica := testenv.StartRedis(t, testenv.WithRedisArgs("--replicaof", host, port))

	mc, _ := newTestRedisCollector(t, Target{Name: "test", Address: master.Addr})
	rcol, _ := newTestRedisCollector(t, Target{Name: "test", Address: replica.Addr})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, _, err := redisCollect(t, rcol, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := redisValue(mfs, "redis_master_link_up", nil); v == 1 {
			if _, ok := redisValue(mfs, "redis_instance_info", map[string]string{"role": "slave"}); !ok {
				t.Errorf("replica's redis_instance_info: %v", mfs["redis_instance_info"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica link not up after 10s: redis_master_link_up %v", mfs["redis_master_link_up"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	mfs, _, err := redisCollect(t, mc, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := redisValue(mfs, "redis_connected_slaves", nil); v != 1 {
		t.Errorf("master's redis_connected_slaves = %v, want 1", v)
	}

	// The master goes away: the replica reports the link down.
	master.Kill()
	deadline = time.Now().Add(10 * time.Second)
	for {
		mfs, _, err := redisCollect(t, rcol, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := redisValue(mfs, "redis_master_link_up", nil); ok && v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica still reports the link up 10s after the master died")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRedisCollectReturnsBeforeDeadlineWhenRedisIsPausedAndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t)
	c, _ := newTestRedisCollector(t, Target{Address: r.Addr})
	if mfs, _, err := redisCollect(t, c, 5*time.Second); err != nil || redisUp(t, mfs) != 1 {
		t.Fatalf("before pause: up=%v err=%v", mfs["redis_up"], err)
	}

	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = r.Resume()
		}
	})
	// Twice: the first scrape hangs on a pooled connection, the second on
	// a fresh one (the kernel still accepts the TCP connection). Then
	// several at once, more than the pool holds.
	for i := range 2 {
		mfs, took, err := redisCollect(t, c, 2*time.Second)
		if took > 2500*time.Millisecond {
			t.Errorf("paused scrape %d took %v with a 2s deadline", i, took)
		}
		if err == nil || redisUp(t, mfs) != 0 {
			t.Errorf("paused scrape %d: redis_up %v err %v", i, mfs["redis_up"], err)
		}
		t.Logf("paused scrape %d returned after %v", i, took)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			mfs, took, err := redisCollect(t, c, 2*time.Second)
			if up, ok := redisValue(mfs, "redis_up", nil); took > 2500*time.Millisecond || err == nil || !ok || up != 0 {
				t.Errorf("concurrent paused scrape %d: took %v, up %v, err %v", i, took, mfs["redis_up"], err)
			}
		})
	}
	wg.Wait()

	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	mfs, _, err := redisCollect(t, c, 2*time.Second)
	if err != nil || redisUp(t, mfs) != 1 {
		t.Errorf("first scrape after SIGCONT: up %v err %v", mfs["redis_up"], err)
	}
}

func TestRedisCollectorRecoversAfterKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t)
	c, _ := newTestRedisCollector(t, Target{Address: r.Addr})
	if mfs, _, err := redisCollect(t, c, 5*time.Second); err != nil || redisUp(t, mfs) != 1 {
		t.Fatalf("before kill: up=%v err=%v", mfs["redis_up"], err)
	}
	r.Kill()
	for i := range 3 {
		mfs, took, err := redisCollect(t, c, 2*time.Second)
		if err == nil || redisUp(t, mfs) != 0 {
			t.Errorf("scrape %d of a dead server: up %v err %v", i, mfs["redis_up"], err)
		}
		// Connection refused is immediate; nothing waits for the deadline.
		if took > time.Second {
			t.Errorf("scrape %d of a dead server took %v", i, took)
		}
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	// After repeated dial failures the pool probes the server once a
	// second, so the first scrapes after the restart may still fail.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs, _, err := redisCollect(t, c, 2*time.Second)
		if err == nil && redisUp(t, mfs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 5s after restart: up %v err %v", mfs["redis_up"], err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRedisCollectorConstructedWhileServerIsDown(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newTestRedisCollector(t, Target{Address: fmt.Sprintf("127.0.0.1:%d", port)})
	mfs, took, err := redisCollect(t, c, 2*time.Second)
	if err == nil || redisUp(t, mfs) != 0 || took > time.Second {
		t.Errorf("up %v err %v took %v", mfs["redis_up"], err, took)
	}
	if len(mfs) != 1 {
		t.Errorf("want only redis_up from a down server, got %d families", len(mfs))
	}

	// After Close the collector answers without panicking.
	_ = c.Close()
	mfs, _, err = redisCollect(t, c, time.Second)
	if err == nil || redisUp(t, mfs) != 0 {
		t.Errorf("after Close: up %v err %v", mfs["redis_up"], err)
	}
}

func TestRedisCollectorAuthentication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	const password = "s3cret-Pa55"
	r := testenv.StartRedis(t, testenv.WithRedisArgs("--requirepass", password))
	admin := goredis.NewClient(&goredis.Options{Addr: r.Addr, Password: password, Protocol: 2, DisableIdentity: true, PoolSize: 1})
	t.Cleanup(func() { _ = admin.Close() })
	// The least an exporter user needs.
	for _, user := range [][]any{
		{"warden", "+ping", "+info", "+client|setname"},
		{"warden-db", "+ping", "+info", "+client|setname", "+select"},
	} {
		args := append([]any{"ACL", "SETUSER", user[0], "on", ">w4rden-ACL-pw"}, user[1:]...)
		if err := admin.Do(context.Background(), args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	writeSecret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodFile := writeSecret("good", password+"\n")
	wrongFile := writeSecret("wrong", "wrong-Pa55word\n")
	aclFile := writeSecret("acl", "w4rden-ACL-pw")
	t.Setenv("WARDEN_TEST_REDIS_PASSWORD", password)

	tests := []struct {
		name   string
		target Target
		up     float64
		secret string // must not appear in errors or logs
	}{
		{name: "password from file", target: Target{Address: r.Addr, Password: secret.Secret{File: goodFile}}, up: 1, secret: password},
		{name: "password from env", target: Target{Address: r.Addr, Password: secret.Secret{Env: "WARDEN_TEST_REDIS_PASSWORD"}}, up: 1, secret: password},
		{name: "ACL user", target: Target{Address: r.Addr, Username: "warden", Password: secret.Secret{File: aclFile}}, up: 1, secret: "w4rden-ACL-pw"},
		{name: "wrong password", target: Target{Address: r.Addr, Password: secret.Secret{File: wrongFile}}, up: 0, secret: "wrong-Pa55word"},
		{name: "ACL user on another database needs +select", target: Target{Address: "redis://" + r.Addr + "/2", Username: "warden", Password: secret.Secret{File: aclFile}}, up: 0, secret: "w4rden-ACL-pw"},
		{name: "ACL user with +select on another database", target: Target{Address: "redis://" + r.Addr + "/2", Username: "warden-db", Password: secret.Secret{File: aclFile}}, up: 1, secret: "w4rden-ACL-pw"},
		{name: "wrong ACL user", target: Target{Address: r.Addr, Username: "nobody", Password: secret.Secret{File: aclFile}}, up: 0, secret: "w4rden-ACL-pw"},
		{name: "no password", target: Target{Address: r.Addr}, up: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, logs := newTestRedisCollector(t, tt.target)
			mfs, _, err := redisCollect(t, c, 3*time.Second)
			if up := redisUp(t, mfs); up != tt.up {
				t.Errorf("redis_up = %v, want %v (err %v)", up, tt.up, err)
			}
			if (err != nil) != (tt.up == 0) {
				t.Errorf("err = %v", err)
			}
			if err != nil {
				// What the exporter logs about a failed collector.
				slog.New(slog.NewTextHandler(logs, nil)).Warn("collector failed", "collector", c.Name(), "err", err)
				for _, s := range []string{err.Error(), logs.String()} {
					if strings.Contains(s, password) || (tt.secret != "" && strings.Contains(s, tt.secret)) {
						t.Errorf("password revealed: %s", s)
					}
				}
			}
		})
	}

	// A rotated password file is read again for the next connection.
	rotating := writeSecret("rotating", "wrong")
	c, _ := newTestRedisCollector(t, Target{Address: r.Addr, Password: secret.Secret{File: rotating}})
	if mfs, _, _ := redisCollect(t, c, 3*time.Second); redisUp(t, mfs) != 0 {
		t.Fatal("up with the wrong password")
	}
	writeSecret("rotating", password)
	if mfs, _, err := redisCollect(t, c, 3*time.Second); redisUp(t, mfs) != 1 {
		t.Errorf("after rotating the password file: up %v err %v", mfs["redis_up"], err)
	}
}

func TestRedisCollectorTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	dir := t.TempDir()
	certs := redisWriteTestCerts(t, dir)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t, testenv.WithRedisArgs(
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", certs.serverCert, "--tls-key-file", certs.serverKey,
		"--tls-ca-cert-file", certs.ca, "--tls-auth-clients", "yes"))
	tlsAddr := fmt.Sprintf("rediss://127.0.0.1:%d", port)

	otherDir := t.TempDir()
	otherCA := redisWriteTestCerts(t, otherDir).ca

	tests := []struct {
		name    string
		target  Target
		up      float64
		errLike string
	}{
		{name: "verified server and client certificate",
			target: Target{Address: tlsAddr, TLS: &TLSConfig{CAFile: certs.ca, CertFile: certs.clientCert, KeyFile: certs.clientKey}}, up: 1},
		{name: "server name override",
			target: Target{Address: fmt.Sprintf("rediss://localhost:%d/2", port), TLS: &TLSConfig{CAFile: certs.ca, CertFile: certs.clientCert, KeyFile: certs.clientKey, ServerName: "redis.test"}}, up: 1},
		{name: "no client certificate",
			target: Target{Address: tlsAddr, TLS: &TLSConfig{CAFile: certs.ca}}, up: 0},
		{name: "unknown CA",
			target:  Target{Address: tlsAddr, TLS: &TLSConfig{CAFile: otherCA, CertFile: certs.clientCert, KeyFile: certs.clientKey}},
			up:      0,
			errLike: "certificate",
		},
		{name: "plain client on the TLS port",
			target: Target{Address: fmt.Sprintf("127.0.0.1:%d", port)}, up: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestRedisCollector(t, tt.target)
			mfs, took, err := redisCollect(t, c, 2*time.Second)
			if up := redisUp(t, mfs); up != tt.up {
				t.Errorf("redis_up = %v, want %v (err %v)", up, tt.up, err)
			}
			if tt.errLike != "" && (err == nil || !strings.Contains(err.Error(), tt.errLike)) {
				t.Errorf("err = %v, want it to mention %q", err, tt.errLike)
			}
			if took > 2500*time.Millisecond {
				t.Errorf("took %v", took)
			}
		})
	}

	// A hung TLS server: the handshake itself must give up at the deadline.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Resume() }()
	c, _ := newTestRedisCollector(t, Target{Address: tlsAddr, DialTimeout: 30 * time.Second,
		TLS: &TLSConfig{CAFile: certs.ca, CertFile: certs.clientCert, KeyFile: certs.clientKey}})
	mfs, took, err := redisCollect(t, c, 2*time.Second)
	if took > 2500*time.Millisecond || err == nil || redisUp(t, mfs) != 0 {
		t.Errorf("paused TLS server: took %v, up %v, err %v", took, mfs["redis_up"], err)
	}
}

type redisTestCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// redisWriteTestCerts writes a CA and a server (127.0.0.1, localhost,
// redis.test) and client certificate signed by it.
func redisWriteTestCerts(t testing.TB, dir string) redisTestCerts {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warden test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost", "redis.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	serverDER, serverKey := leaf(2, "redis.test", x509.ExtKeyUsageServerAuth)
	clientDER, clientKey := leaf(3, "warden-exporter", x509.ExtKeyUsageClientAuth)
	return redisTestCerts{
		ca:         write("ca.crt", "CERTIFICATE", caDER),
		serverCert: write("server.crt", "CERTIFICATE", serverDER),
		serverKey:  writeKey("server.key", serverKey),
		clientCert: write("client.crt", "CERTIFICATE", clientDER),
		clientKey:  writeKey("client.key", clientKey),
	}
}

// TestRedisConnectionsNeverExceedPoolSizeAndDoNotLeak scrapes concurrently
// and repeatedly, watching the server's own view of the exporter's
// connections.
func TestRedisConnectionsNeverExceedPoolSizeAndDoNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(t)
	rc := redisClient(t, r.Addr, 0)
	ctx := context.Background()
	exporterConns := func() int {
		list, err := rc.ClientList(ctx).Result()
		if err != nil {
			t.Error(err)
			return 0
		}
		return strings.Count(list, "name="+redisClientName+" ")
	}
	c, _ := newTestRedisCollector(t, Target{Address: r.Addr, PoolSize: 2})

	stop := make(chan struct{})
	maxSeen := 0
	var watcher sync.WaitGroup
	watcher.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			maxSeen = max(maxSeen, exporterConns())
		}
	})
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			for range 5 {
				if _, _, err := redisCollect(t, c, 10*time.Second); err != nil {
					t.Errorf("collect: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if maxSeen > 2 || maxSeen == 0 {
		t.Errorf("the server saw up to %d exporter connections, want 1-2", maxSeen)
	}

	// Once the pool is warm, scrapes open no new connections.
	before := redisServerStat(t, rc, "stats", "total_connections_received")
	for range 300 {
		if _, _, err := redisCollect(t, c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if after := redisServerStat(t, rc, "stats", "total_connections_received"); after != before {
		t.Errorf("300 sequential scrapes opened %v new connections", after-before)
	}
	if n := exporterConns(); n > 2 {
		t.Errorf("%d exporter connections after the scrapes", n)
	}
}

func TestRedisMetricsPassPromtoolCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	testenv.Promtool(t)
	// A replica exposes the most series: replication fields as well as
	// everything else.
	master := testenv.StartRedis(t, testenv.WithRedisArgs("--repl-diskless-sync-delay", "0"))
	host, port, _ := net.SplitHostPort(master.Addr)
	replica := testenv.StartRedis(t, testenv.WithRedisArgs("--replicaof", host, port))
	for _, addr := range []string{sharedRedis.Get(t).Addr, master.Addr} {
		rc := redisClient(t, addr, 6)
		if err := rc.Set(context.Background(), "promtool", "1", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the replica to have the key, i.e. a synced link.
	onReplica := redisClient(t, replica.Addr, 6)
	for deadline := time.Now().Add(10 * time.Second); onReplica.Exists(context.Background(), "promtool").Val() != 1; {
		if time.Now().After(deadline) {
			t.Fatal("replica not synced after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, addr := range []string{sharedRedis.Get(t).Addr, replica.Addr} {
		c, _ := newTestRedisCollector(t, Target{Address: addr})
		a := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(a)
		text := testenv.Exposition(t, reg)
		if a.LastErr() != nil {
			t.Fatalf("collect: %v", a.LastErr())
		}
		if !strings.Contains(text, "redis_db_keys{") {
			t.Fatalf("keyspace missing from the output under check:\n%s", text)
		}
		testenv.CheckMetrics(t, addr, text)
		if problems, err := testutil.CollectAndLint(a); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", err, problems)
		}
	}
}

func TestRedisTargetConfig(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := redisWriteTestCerts(t, dir)
	const leak = "hunter2-leak"

	valid := []struct {
		name string
		yaml string
		want Target
		ep   redisEndpoint
	}{
		{
			name: "defaults",
			yaml: "redis:\n- name: cache\n  address: 127.0.0.1:6379\n",
			want: Target{Name: "cache", Address: "127.0.0.1:6379", PoolSize: 2, DialTimeout: 3 * time.Second},
			ep:   redisEndpoint{addr: "127.0.0.1:6379", host: "127.0.0.1"},
		},
		{
			name: "URL with db, default port",
			yaml: "redis:\n- name: cache\n  address: redis://cache.example/3\n  pool_size: 5\n  dial_timeout: 500ms\n",
			want: Target{Name: "cache", Address: "redis://cache.example/3", PoolSize: 5, DialTimeout: 500 * time.Millisecond},
			ep:   redisEndpoint{addr: "cache.example:6379", host: "cache.example", db: 3},
		},
		{
			name: "TLS with ACL user",
			yaml: fmt.Sprintf("redis:\n- name: cache\n  address: rediss://[::1]:6380\n  username: warden\n  password: {file: %s}\n  tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: redis.test}\n",
				pwFile, certs.ca, certs.clientCert, certs.clientKey),
			want: Target{Name: "cache", Address: "rediss://[::1]:6380", Username: "warden", Password: secret.Secret{File: pwFile},
				TLS:      &TLSConfig{CAFile: certs.ca, CertFile: certs.clientCert, KeyFile: certs.clientKey, ServerName: "redis.test"},
				PoolSize: 2, DialTimeout: 3 * time.Second},
			ep: redisEndpoint{addr: "[::1]:6380", host: "::1", tls: true},
		},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseTargets(tt.yaml)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := cfg[0]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v %+v\nwant %+v %+v", got, got.TLS, tt.want, tt.want.TLS)
			}
			ep, err := parseRedisAddress(tt.want.Address)
			if err != nil || ep != tt.ep {
				t.Errorf("endpoint = %+v, %v; want %+v", ep, err, tt.ep)
			}
		})
	}

	invalid := []struct {
		name string
		yaml string
		want string // the error contains this
	}{
		{"unknown field", "redis:\n- name: a\n  address: h:1\n  pool: 3\n", "field pool not found"},
		{"unknown TLS field", "redis:\n- name: a\n  address: rediss://h:1\n  tls: {ca: x}\n", "field ca not found"},
		{"missing address", "redis:\n- name: a\n", "redis[0].address: required"},
		{"bad scheme", "redis:\n- name: a\n  address: http://h:1\n", `redis[0].address: unsupported scheme "http"`},
		{"no port", "redis:\n- name: a\n  address: localhost\n", "redis[0].address: want redis://"},
		{"bad port", "redis:\n- name: a\n  address: redis://h:99999\n", `redis[0].address: port "99999"`},
		{"bad db", "redis:\n- name: a\n  address: redis://h:1/cache\n", `redis[0].address: database "cache"`},
		{"query", "redis:\n- name: a\n  address: redis://h:1/0?dial_timeout=1s\n", "redis[0].address: query parameters"},
		{"credentials in URL", "redis:\n- name: a\n  address: redis://u:" + leak + "@h:1/0\n", "redis[0].address: must not contain credentials"},
		{"unparsable URL with password", "redis:\n- name: a\n  address: 'redis://u:" + leak + "@[::1'\n", "redis[0].address: not a valid URL"},
		{"missing password file", "redis:\n- name: a\n  address: h:1\n  password: {file: " + filepath.Join(dir, "nope") + "}\n", "redis[0].password: read secret file"},
		{"unset password env", "redis:\n- name: a\n  address: h:1\n  password: {env: WARDEN_TEST_UNSET_VARIABLE}\n", "redis[0].password: environment variable WARDEN_TEST_UNSET_VARIABLE is not set"},
		{"username without password", "redis:\n- name: a\n  address: h:1\n  username: warden\n", "redis[0].username: needs a password"},
		{"pool too small", "redis:\n- name: a\n  address: h:1\n  pool_size: 0\n", "redis[0].pool_size: must be between 1 and 20"},
		{"pool too large", "redis:\n- name: a\n  address: h:1\n  pool_size: 50\n", "redis[0].pool_size: must be between 1 and 20"},
		{"negative dial timeout", "redis:\n- name: a\n  address: h:1\n  dial_timeout: -1s\n", "redis[0].dial_timeout: must be positive"},
		{"dial timeout not a duration", "redis:\n- name: a\n  address: h:1\n  dial_timeout: soon\n", "line 4: cannot unmarshal !!str `soon` into time.Duration"},
		{"TLS without rediss", "redis:\n- name: a\n  address: redis://h:1\n  tls: {insecure_skip_verify: true}\n", "redis[0].tls: needs a rediss:// address"},
		{"cert without key", "redis:\n- name: a\n  address: rediss://h:1\n  tls: {cert_file: " + certs.clientCert + "}\n", "redis[0].tls.key_file: required with cert_file"},
		{"missing CA file", "redis:\n- name: a\n  address: rediss://h:1\n  tls: {ca_file: " + filepath.Join(dir, "nope.crt") + "}\n", "redis[0].tls.ca_file:"},
		{"CA file without PEM", "redis:\n- name: a\n  address: rediss://h:1\n  tls: {ca_file: " + pwFile + "}\n", "redis[0].tls.ca_file: no PEM certificate"},
		{"key does not match cert", "redis:\n- name: a\n  address: rediss://h:1\n  tls: {cert_file: " + certs.clientCert + ", key_file: " + certs.serverKey + "}\n", "redis[0].tls.cert_file:"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTargets(tt.yaml)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), leak) {
				t.Errorf("error reveals the password: %q", err)
			}
		})
	}
}
