package actions

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

func redisDB(t testing.TB, addr, password string, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DB: db, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func fill(t testing.TB, c *redis.Client, prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := c.Set(context.Background(), fmt.Sprintf("%s:%d", prefix, i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func dbSize(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	n, err := c.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFlushClearsOnlyTheConfiguredDatabase(t *testing.T) {
	r := startRedis(t)
	db0, db3, db4 := redisDB(t, r.Addr, "", 0), redisDB(t, r.Addr, "", 3), redisDB(t, r.Addr, "", 4)
	fill(t, db0, "session", 5)
	fill(t, db3, "cache", 20)
	fill(t, db4, "ratelimit", 7)
	ex := NewExecutor(nil, testLogger(t))
	target := RedisTarget{Name: "auth-cache", Address: r.Addr, DB: 3}

	res, err := ex.Run(context.Background(), Request{Kind: FlushCache, Redis: target, DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if res.Changed || !strings.Contains(res.Detail, "would flush 20 keys from db 3") || dbSize(t, db3) != 20 {
		t.Errorf("dry run: %+v, db3 has %d keys", res, dbSize(t, db3))
	}

	res, err = ex.Run(context.Background(), Request{Kind: FlushCache, Redis: target, Reason: "RedisMemoryHigh"})
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	if !res.Changed || !res.Verified || res.Object != "Redis/auth-cache/db3" {
		t.Errorf("result %+v", res)
	}
	if n := dbSize(t, db3); n != 0 {
		t.Errorf("db3 has %d keys after flush", n)
	}
	if n0, n4 := dbSize(t, db0), dbSize(t, db4); n0 != 5 || n4 != 7 {
		t.Errorf("other databases lost keys: db0 %d (want 5), db4 %d (want 7)", n0, n4)
	}
	stats, err := db0.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stats, "cmdstat_flushall") || !strings.Contains(stats, "cmdstat_flushdb:calls=1,") {
		t.Errorf("want exactly one FLUSHDB and no FLUSHALL, commandstats:\n%s", stats)
	}
}

func TestFlushAuthenticationAndUnreachableServer(t *testing.T) {
	r := startRedis(t, testenv.WithRedisArgs("--requirepass", "s3cret"))
	fill(t, redisDB(t, r.Addr, "s3cret", 1), "cache", 3)
	ex := NewExecutor(nil, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond))

	_, err := ex.Run(context.Background(), Request{Kind: FlushCache, Redis: RedisTarget{Address: r.Addr, Password: "wrong", DB: 1}, Timeout: time.Minute})
	if err == nil || Reason(err) != ReasonForbidden || IsTransient(err) {
		t.Errorf("wrong password: %v (reason %q); want permanent forbidden", err, Reason(err))
	}
	if err != nil && strings.Contains(err.Error(), "attempts") {
		t.Errorf("wrong password was retried: %v", err)
	}
	if n := dbSize(t, redisDB(t, r.Addr, "s3cret", 1)); n != 3 {
		t.Errorf("db1 has %d keys after a refused flush, want 3", n)
	}

	res, err := ex.Run(context.Background(), Request{Kind: FlushCache, Redis: RedisTarget{Address: r.Addr, Password: "s3cret", DB: 1}})
	if err != nil || !res.Verified {
		t.Fatalf("flush with the password: %+v, %v", res, err)
	}

	// Bounded by count, so the outcome does not depend on how many
	// attempts a busy machine fits into a timeout.
	r.Stop()
	ex = NewExecutor(nil, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond), WithMaxAttempts(3))
	_, err = ex.Run(context.Background(), Request{Kind: FlushCache, Redis: RedisTarget{Address: r.Addr, DB: 1}, Timeout: 5 * time.Minute})
	if err == nil || Reason(err) != ReasonUnavailable || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Errorf("stopped server: %v (reason %q); want unavailable after 3 attempts", err, Reason(err))
	}
}

func TestFlushOverTLS(t *testing.T) {
	now := time.Now()
	ca, err := certgen.SelfSigned(certgen.Options{CommonName: "test CA", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Sign(certgen.Options{CommonName: "redis", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": ca.CertPEM(), "cert.pem": leaf.CertPEM(), "key.pem": leaf.KeyPEM()}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsPort, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := startRedis(t, testenv.WithRedisArgs(
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no"))
	fill(t, redisDB(t, r.Addr, "", 2), "cache", 4)
	target := RedisTarget{Name: "tls", Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), DB: 2, TLS: true}

	// Without the CA the server is not trusted: a permanent failure.
	_, err = NewExecutor(nil, testLogger(t)).Run(context.Background(), Request{Kind: FlushCache, Redis: target, Timeout: time.Minute})
	if err == nil || IsTransient(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server: %v; want a permanent certificate error", err)
	}
	if n := dbSize(t, redisDB(t, r.Addr, "", 2)); n != 4 {
		t.Fatalf("db2 has %d keys after a failed flush", n)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ex := NewExecutor(nil, testLogger(t), WithRedisTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	res, err := ex.Run(context.Background(), Request{Kind: FlushCache, Redis: target})
	if err != nil || !res.Verified {
		t.Fatalf("flush over TLS: %+v, %v", res, err)
	}
	if n := dbSize(t, redisDB(t, r.Addr, "", 2)); n != 0 {
		t.Errorf("db2 has %d keys after flush over TLS", n)
	}
}
