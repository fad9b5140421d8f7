package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/warden-sre/warden/internal/testenv"
)

// TestReloadKeepsAuthCountersWhenTheirConfigIsUnchanged: a reload that
// leaves the auth section as it was keeps the auth collector, with its
// counters and its by-source window (the brute-force alert's state).
func TestReloadKeepsAuthCountersWhenTheirConfigIsUnchanged(t *testing.T) {
	dir := t.TempDir()
	logPath := testenv.WriteFile(t, dir, "auth.log", "")
	auth := fmt.Sprintf("auth:\n  files: [%q]\n  poll_interval: 20ms\n", logPath)
	cfgPath := testenv.WriteFile(t, dir, "config.yml", auth)
	exp := startExporter(t, cfgPath)
	// The follower starts at the end of the file: wait until it has seen it.
	testenv.WaitFor(t, 30*time.Second, "the auth log to be followed", func() bool {
		return strings.Contains(exp.Output(), "following log file")
	})

	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 25 {
		fmt.Fprintf(f, `{"timestamp":%q,"event":"authentication_failed","ip_address":"203.0.113.7"}`+"\n", time.Now().UTC().Format(time.RFC3339Nano))
	}
	_ = f.Close()
	want := []string{
		"warden_auth_login_failures_total 25",
		`warden_auth_failed_logins_by_source{source="203.0.113.7"} 25`,
	}
	testenv.WaitFor(t, 30*time.Second, "25 failed logins counted", func() bool {
		body, _ := exp.scrape(t, "")
		return testenv.ContainsLine(body, want[0])
	})

	for i, cfg := range []string{
		auth,                                     // unchanged
		"scrape: {default_timeout: 9s}\n" + auth, // scrape settings only
		"# a comment\n" + auth,                   // same configuration, other text
	} {
		testenv.WriteFile(t, dir, "config.yml", cfg)
		if code := exp.reload(t); code != http.StatusOK {
			t.Fatalf("reload %d: status %d", i, code)
		}
		body, _ := exp.scrape(t, "")
		requireLines(t, body, append(want, "warden_exporter_config_last_reload_successful 1")...)
	}
}

// TestReloadStaysWithinConnectionCaps reloads, with and without changes,
// while scrapes keep the pools busy: once a reload has returned and no
// scrape of the old configuration is running, the exporter holds no more
// connections than max_connections (PostgreSQL) and pool_size (Redis),
// and a reload that leaves a target unchanged keeps its connections.
func TestReloadStaysWithinConnectionCaps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	pg := testenv.StartPostgres(t)
	redis := testenv.StartRedis(t)
	dir := t.TempDir()
	config := func(variant int) string {
		return fmt.Sprintf("postgres:\n  - name: db\n    dsn: %s\n    max_connections: 2\n    statement_timeout: %ds\n"+
			"redis:\n  - name: cache\n    address: redis://%s/0\n    pool_size: 2\n    dial_timeout: %ds\n",
			pg.DSN("postgres"), 5+variant, redis.Addr, 3+variant)
	}
	cfgPath := testenv.WriteFile(t, dir, "config.yml", config(0))
	exp := startExporter(t, cfgPath)

	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	rdb := goredis.NewClient(&goredis.Options{Addr: redis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })

	pgBackends := func() []int {
		rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'warden-exporter' ORDER BY pid")
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	redisClients := func() []string {
		list, err := rdb.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name=warden-exporter ") {
				ids = append(ids, strings.Fields(line)[0])
			}
		}
		return ids
	}
	// Concurrent scrapes make each pool open its full cap.
	busyScrapes := func() {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				body, _ := exp.scrape(t, "")
				if !testenv.ContainsLine(body, `pg_up{target="db"} 1`) || !testenv.ContainsLine(body, `redis_up{target="cache"} 1`) {
					t.Errorf("scrape without pg_up 1 and redis_up 1:\n%s", body)
				}
			})
		}
		wg.Wait()
	}
	withinCaps := func(what string) {
		t.Helper()
		var pids []int
		var clients []string
		// A closed connection leaves pg_stat_activity once its backend has
		// exited: poll.
		ok := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			pids, clients = pgBackends(), redisClients()
			if ok = len(pids) <= 2 && len(clients) <= 2; ok {
				break
			}
		}
		if !ok {
			t.Fatalf("%s: %d PostgreSQL and %d Redis connections, caps are 2 and 2", what, len(pids), len(clients))
		}
	}

	busyScrapes()
	withinCaps("before any reload")
	variant := 0
	for i := range 6 {
		unchanged := i%2 == 0
		if !unchanged {
			variant = 1 - variant
		}
		testenv.WriteFile(t, dir, "config.yml", config(variant))
		pidsBefore, clientsBefore := pgBackends(), redisClients()
		if code := exp.reload(t); code != http.StatusOK {
			t.Fatalf("reload %d: status %d", i, code)
		}
		busyScrapes()
		withinCaps(fmt.Sprintf("after reload %d (unchanged %t)", i, unchanged))
		if unchanged {
			pids, clients := pgBackends(), redisClients()
			if len(pidsBefore) == 0 || !isSubset(pids, pidsBefore) {
				t.Errorf("reload %d with an unchanged target: PostgreSQL backends %v, before %v", i, pids, pidsBefore)
			}
			if len(clientsBefore) == 0 || !isSubset(clients, clientsBefore) {
				t.Errorf("reload %d with an unchanged target: Redis clients %v, before %v", i, clients, clientsBefore)
			}
		}
	}
}

func isSubset[T comparable](sub, of []T) bool {
	for _, v := range sub {
		if !slices.Contains(of, v) {
			return false
		}
	}
	return true
}
