package redis

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warden-sre/warden/internal/secret"
)

// Target configures the redis collector for one Redis server.
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

// redisEndpoint is a parsed Target.Address.
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
// name the field under path. Names (required, unique) are the exporter's
// to check across targets.
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
