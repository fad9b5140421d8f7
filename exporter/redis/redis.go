// Package redis collects Redis server metrics at scrape time (PING latency
// and INFO, with redis_exporter's names) over a small capped connection
// pool.
package redis

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	redisDefaultPoolSize    = 2
	redisMaxPoolSize        = 20
	redisDefaultDialTimeout = 3 * time.Second
	redisDefaultPort        = "6379"
	// redisCommandTimeout bounds one command when the caller's context has
	// no deadline; a scrape's deadline is normally much shorter.
	redisCommandTimeout = 10 * time.Second
	// redisClientName is set on every connection so that operators can tell
	// the exporter's connections apart in CLIENT LIST.
	redisClientName = "warden-exporter"
)

// Collector scrapes one Redis server with a small shared connection
// pool: one PING (latency) and one INFO per scrape.
type Collector struct {
	name   string
	addr   string
	client *goredis.Client
	descs  *redisDescs
	logger *slog.Logger
}

// New builds the collector for a validated target. The client connects
// lazily, so a server that is down does not fail construction: it shows as
// redis_up 0.
func New(t Target, logger *slog.Logger) (*Collector, error) {
	path := "redis/" + t.Name
	ep, err := parseRedisAddress(t.Address)
	if err != nil {
		return nil, fmt.Errorf("%s.address: %w", path, err)
	}
	tlsCfg, err := t.tlsConfig(path, ep)
	if err != nil {
		return nil, err
	}

	dialer := &net.Dialer{Timeout: t.DialTimeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if tlsCfg != nil {
		// tls.Dialer honours ctx during the handshake, which go-redis's
		// default TLS dialer does not: a hung server would otherwise hold
		// a scrape for the whole dial timeout.
		dial = (&tls.Dialer{NetDialer: dialer, Config: tlsCfg}).DialContext
	}
	username, password := t.Username, t.Password
	opts := &goredis.Options{
		Addr:       ep.addr,
		DB:         ep.db,
		ClientName: redisClientName,
		Dialer:     dial,
		TLSConfig:  tlsCfg,
		CredentialsProviderContext: func(ctx context.Context) (string, string, error) {
			pw, err := password.Value()
			if err != nil {
				return "", "", fmt.Errorf("password: %w", err)
			}
			return username, pw, nil
		},
		// RESP2 keeps the handshake to HELLO 2 / AUTH on every server
		// version; nothing here needs RESP3.
		Protocol:        2,
		DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
		// The scrape deadline bounds every command; retries happen only
		// within it.
		ContextTimeoutEnabled: true,
		ReadTimeout:           redisCommandTimeout,
		WriteTimeout:          redisCommandTimeout,
		PoolTimeout:           redisCommandTimeout,
		MaxRetries:            1,
		DialTimeout:           t.DialTimeout,
		DialerRetries:         1,
		// A hard cap: concurrent scrapes wait for a connection rather than
		// open more.
		PoolSize:         t.PoolSize,
		MaxActiveConns:   t.PoolSize,
		MaxIdleConns:     t.PoolSize,
		PipelinePoolSize: -1,
	}
	return &Collector{
		name:   "redis/" + t.Name,
		addr:   ep.addr,
		client: goredis.NewClient(opts),
		descs:  newRedisDescs(t.Name),
		logger: logger,
	}, nil
}

// Name is "redis/" and the target's name.
func (c *Collector) Name() string { return c.name }

// Close releases the connection pool.
func (c *Collector) Close() error { return c.client.Close() }

// Collect always reports redis_up, also when the server hangs until ctx
// ends (the exporter ends ctx a little before the scrape deadline for that).
func (c *Collector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	start := time.Now()
	if err := c.client.Ping(ctx).Err(); err != nil {
		ch <- prometheus.MustNewConstMetric(c.descs.up, prometheus.GaugeValue, 0)
		return fmt.Errorf("ping %s: %w", c.addr, err)
	}
	ping := time.Since(start)
	raw, err := c.client.Info(ctx).Result()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.descs.up, prometheus.GaugeValue, 0)
		return fmt.Errorf("info %s: %w", c.addr, err)
	}
	ch <- prometheus.MustNewConstMetric(c.descs.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.descs.ping, prometheus.GaugeValue, ping.Seconds())

	info, err := parseRedisInfo(raw)
	info.emit(ch, c.descs)
	if len(info.invalid) > 0 {
		c.logger.Debug("unreadable INFO fields skipped", "fields", info.invalid)
	}
	if err != nil {
		return fmt.Errorf("info %s: %w", c.addr, err)
	}
	return nil
}
