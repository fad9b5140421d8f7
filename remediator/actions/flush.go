package actions

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// flush runs FLUSHDB ASYNC on one Redis database. The database is selected by
// the client's DB option (a SELECT on every new connection), so the command
// can never reach another database; FLUSHALL is never sent.
func (e *executor) flush(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	t := req.Redis
	res := Result{Object: fmt.Sprintf("Redis/%s/db%d", t.Name, t.DB)}
	if t.Name == "" {
		res.Object = fmt.Sprintf("Redis/%s/db%d", t.Address, t.DB)
	}
	host, _, err := net.SplitHostPort(t.Address)
	if err != nil || host == "" {
		return res, invalidf("redis address %q: want host:port", t.Address)
	}
	if t.DB < 0 {
		return res, invalidf("redis db %d is negative", t.DB)
	}
	opts := &redis.Options{
		Addr:            t.Address,
		Username:        t.Username,
		Password:        t.Password,
		DB:              t.DB,
		MaxRetries:      -1, // retries are ours, with backoff and classification
		PoolSize:        1,
		DialTimeout:     5 * time.Second,
		ReadTimeout:     5 * time.Second,
		WriteTimeout:    5 * time.Second,
		DisableIdentity: true,
		ClientName:      FieldManager,
	}
	if t.TLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if e.redisTLS != nil {
			cfg = e.redisTLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		opts.TLSConfig = cfg
	}
	client := redis.NewClient(opts)
	defer client.Close()

	if req.DryRun {
		var keys int64
		err := e.retry(ctx, log, "dbsize", func(ctx context.Context) error {
			var err error
			keys, err = client.DBSize(ctx).Result()
			if err != nil {
				return fmt.Errorf("redis %s db %d: DBSIZE: %w", t.Address, t.DB, err)
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		res.Detail = fmt.Sprintf("dry run: would flush %d keys from db %d", keys, t.DB)
		log.Debug("flush checked", "keys", keys)
		return res, nil
	}

	var reply string
	err = e.retry(ctx, log, "flushdb", func(ctx context.Context) error {
		var err error
		reply, err = client.FlushDBAsync(ctx).Result()
		if err != nil {
			return fmt.Errorf("redis %s db %d: FLUSHDB ASYNC: %w", t.Address, t.DB, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if reply != "OK" {
		return res, permanent(fmt.Errorf("redis %s db %d: FLUSHDB ASYNC answered %q, want OK", t.Address, t.DB, reply))
	}
	res.Changed = true
	res.Verified = true
	res.Detail = fmt.Sprintf("FLUSHDB ASYNC on db %d: %s", t.DB, reply)
	log.Debug("redis database flushed", "reply", reply)
	return res, nil
}
