// Package redis collects Redis server metrics at scrape time (PING latency
// and INFO, with redis_exporter's names) over a small capped connection
// pool.
package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/warden-sre/warden/internal/secret"
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

// RedisTarget configures the redis collector for one Redis server.
type Target struct {
	// Name is the value of the target label.
	Name string `yaml:"name"`
	// Address is redis://host:port/db, rediss://host:port/db (TLS) or
	// host:port. It must not hold credentials.
	Address string `yaml:"address"`
	// Username is the ACL user; empty means the default user.
	Username string `yaml:"username"`
	// Password is read whenever a new connection is opened, so a rotated
	// password file takes effect without a reload.
	Password secret.Secret `yaml:"password"`
	// TLS settings; only with a rediss:// address.
	TLS *TLSConfig `yaml:"tls"`
	// PoolSize is the most connections the exporter opens to this server.
	PoolSize int `yaml:"pool_size"`
	// DialTimeout bounds connecting (and the TLS handshake).
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// RedisTLSConfig configures TLS for a rediss:// target.
type TLSConfig struct {
	// CAFile verifies the server; empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for servers with
	// tls-auth-clients.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name verified in the server's certificate;
	// the address's host by default.
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// DefaultTarget is a target with every default filled in; a file's
// settings are decoded on top of it, and targets built in code start from
// it.
func DefaultTarget() Target {
	return Target{PoolSize: redisDefaultPoolSize, DialTimeout: redisDefaultDialTimeout}
}

// UnmarshalYAML applies defaults before decoding. It uses the
// function-style unmarshaler because that one keeps the decoder's strict
// (KnownFields) mode; a yaml.Node-based one would silently accept unknown
// fields.
func (t *Target) UnmarshalYAML(unmarshal func(any) error) error {
	type redisTarget Target // without this method
	p := redisTarget(DefaultTarget())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*t = Target(p)
	return nil
}

// redisEndpoint is a parsed RedisTarget.Address.
type redisEndpoint struct {
	addr string // host:port
	host string
	db   int
	tls  bool
}

// parseRedisAddress reads an address. Its errors never quote the address,
// which could hold a password.
func parseRedisAddress(s string) (redisEndpoint, error) {
	var ep redisEndpoint
	if s == "" {
		return ep, errors.New("required")
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return ep, errors.New("want redis://host:port/db, rediss://host:port/db or host:port")
		}
		return redisHostPort(host, port)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return ep, fmt.Errorf("not a valid URL: %v", err)
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		ep.tls = true
	default:
		return ep, fmt.Errorf("unsupported scheme %q: want redis:// or rediss://", u.Scheme)
	}
	if u.User != nil {
		return ep, errors.New("must not contain credentials: use the username and password fields")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return ep, errors.New("query parameters and fragments are not supported")
	}
	port := u.Port()
	if port == "" {
		port = redisDefaultPort
	}
	tlsOn := ep.tls
	ep, err = redisHostPort(u.Hostname(), port)
	if err != nil {
		return ep, err
	}
	ep.tls = tlsOn
	if path := strings.TrimPrefix(u.Path, "/"); path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 {
			return ep, fmt.Errorf("database %q: want a number (redis://host:port/0)", path)
		}
		ep.db = db
	}
	return ep, nil
}

func redisHostPort(host, port string) (redisEndpoint, error) {
	if host == "" {
		return redisEndpoint{}, errors.New("missing host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return redisEndpoint{}, fmt.Errorf("port %q: want 1-65535", port)
	}
	return redisEndpoint{addr: net.JoinHostPort(host, port), host: host}, nil
}

// Validate checks a target decoded from YAML (defaults applied); errors
// name the field under path.
func (t *Target) Validate(path string) error {
	if !utf8.ValidString(t.Name) {
		return fmt.Errorf("%s.name: must be valid UTF-8", path)
	}
	ep, err := parseRedisAddress(t.Address)
	if err != nil {
		return fmt.Errorf("%s.address: %w", path, err)
	}
	if t.Username != "" && !t.Password.IsSet() {
		return fmt.Errorf("%s.username: needs a password (password.file or password.env)", path)
	}
	if err := t.Password.Validate(); err != nil {
		return fmt.Errorf("%s.password: %w", path, err)
	}
	if t.TLS != nil && !ep.tls {
		return fmt.Errorf("%s.tls: needs a rediss:// address", path)
	}
	if _, err := t.tlsConfig(path, ep); err != nil {
		return err
	}
	if t.PoolSize < 1 || t.PoolSize > redisMaxPoolSize {
		return fmt.Errorf("%s.pool_size: must be between 1 and %d", path, redisMaxPoolSize)
	}
	if t.DialTimeout <= 0 {
		return fmt.Errorf("%s.dial_timeout: must be positive", path)
	}
	return nil
}

// tlsConfig builds the client TLS configuration (nil without TLS). Errors
// name the field at fault.
func (t *Target) tlsConfig(path string, ep redisEndpoint) (*tls.Config, error) {
	if !ep.tls {
		return nil, nil
	}
	c := t.TLS
	if c == nil {
		c = &TLSConfig{}
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, // explicit opt-in, documented
	}
	if cfg.ServerName == "" {
		cfg.ServerName = ep.host
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.ca_file: %w", path, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.tls.ca_file: no PEM certificate in %s", path, c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.cert_file: %w", path, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.CertFile != "":
		return nil, fmt.Errorf("%s.tls.key_file: required with cert_file", path)
	case c.KeyFile != "":
		return nil, fmt.Errorf("%s.tls.cert_file: required with key_file", path)
	}
	return cfg, nil
}

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

func (c *Collector) Name() string { return c.name }

// Close releases the connection pool.
func (c *Collector) Close() error { return c.client.Close() }

// Collect always reports redis_up, also when the server hangs until ctx
// ends (Scrape ends ctx a little before the scrape deadline for that).
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
