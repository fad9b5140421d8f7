package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// sessionsSchema is auth-service's sessions table, filled with the users
// the session traffic looks up.
const sessionsSchema = `CREATE TABLE sessions (
	user_id   int PRIMARY KEY,
	token     text NOT NULL,
	last_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sessions (user_id, token) SELECT i, md5(i::text) FROM generate_series(1, 200) i`

// Session traffic: how many users are active, how often one of their
// sessions is looked up, and how long the cache keeps a session.
const (
	sessionUsers    = 50
	sessionLookups  = 20 // per second
	sessionCacheTTL = time.Minute
	// Every sessionTouchEvery-th lookup refreshes last_seen in PostgreSQL:
	// updates leave dead tuples and WAL for the replica to replay.
	sessionTouchEvery = 5
)

// sessionTraffic plays auth-service's use of its datastores until ctx
// ends: a session lookup reads the Redis cache and, on a miss, reads the
// session from PostgreSQL and caches it (cache-aside). Cached sessions
// expire, and the flush of the scenario empties the cache, so the cache
// sees hits and misses; PostgreSQL sees queries for pg_stat_statements,
// updates and replication. It closes rdb when it returns. Errors (a
// datastore restarting) are retried at the next lookup.
func sessionTraffic(ctx context.Context, pgDSN string, rdb *redis.Client) {
	defer rdb.Close()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	everyTick(ctx, time.Second/sessionLookups, func(i int) {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, pgDSN)
			if err != nil {
				return
			}
			conn = c
		}
		user := 1 + rand.IntN(sessionUsers)
		if err := lookupSession(ctx, conn, rdb, user, i%sessionTouchEvery == 0); err != nil && ctx.Err() == nil {
			conn.Close(ctx)
			conn = nil
		}
	})
}

// everyTick calls f every period, with the count of earlier calls, until
// ctx ends.
func everyTick(ctx context.Context, period time.Duration, f func(i int)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f(i)
	}
}

func lookupSession(ctx context.Context, conn *pgx.Conn, rdb *redis.Client, user int, touch bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := fmt.Sprintf("cache:session:%d", user)
	_, err := rdb.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		var token string
		if err := conn.QueryRow(ctx, "SELECT token FROM sessions WHERE user_id = $1", user).Scan(&token); err != nil {
			return err
		}
		if err := rdb.Set(ctx, key, token, sessionCacheTTL).Err(); err != nil {
			return nil // the cache is optional; the session was read
		}
	case err != nil:
		return nil // Redis is down or busy: only the cache is missed
	}
	if touch {
		if _, err := conn.Exec(ctx, "UPDATE sessions SET last_seen = now() WHERE user_id = $1", user); err != nil {
			return err
		}
	}
	return nil
}
