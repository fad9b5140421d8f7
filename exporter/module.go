package exporter

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/warden-sre/warden/exporter/certs"
	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
)

// Module is a named way to probe targets given in the URL of /probe: the
// type of collector, every setting of its backend but the address (which
// comes from the target parameter) and the hosts it may be pointed at.
// Credentials come from here, never from the URL.
type Module struct {
	// Type is postgres, redis or tls.
	Type string `yaml:"type"`
	// AllowedTargets are the hosts /probe may reach with this module: a
	// glob over the host name ("*.db.svc.cluster.local", "*" for any
	// host), an IP network ("10.0.0.0/8") or either with a port
	// ("db-*.example:5432"). A target matching none is refused.
	AllowedTargets []string `yaml:"allowed_targets"`

	Postgres *postgres.Target `yaml:"postgres"`
	Redis    *redis.Target    `yaml:"redis"`
	TLS      *TLSModule       `yaml:"tls"`
}

// TLSModule is a TLS endpoint's settings without its address.
type TLSModule struct {
	// Protocol is tls (the default) or postgres (SSLRequest first).
	Protocol string `yaml:"protocol"`
	// ServerName is sent as SNI and verified; default: the target's host.
	ServerName string `yaml:"server_name"`
	// CAFile verifies the chain; empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// Timeout bounds one probe (default 2s).
	Timeout time.Duration `yaml:"timeout"`
}

// ProbeConfig bounds what /probe keeps open across all probed targets.
type ProbeConfig struct {
	// MaxConnections caps the connections held by the pools of probed
	// targets together: each pool counts with its own cap
	// (postgres.max_connections, redis.pool_size) from creation to close.
	MaxConnections int `yaml:"max_connections"`
	// MaxTargets caps the number of probed targets whose pools are kept.
	MaxTargets int `yaml:"max_targets"`
	// IdleTimeout closes the pools of a target not probed for that long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultProbeConfig is used for fields the file leaves out.
var DefaultProbeConfig = ProbeConfig{
	MaxConnections: 50,
	MaxTargets:     1000,
	IdleTimeout:    5 * time.Minute,
}

const (
	moduleTypePostgres = "postgres"
	moduleTypeRedis    = "redis"
	moduleTypeTLS      = "tls"

	tlsModuleDefaultTimeout = 2 * time.Second
	postgresDefaultPort     = "5432"
	redisDefaultPort        = "6379"
	// maxProbeTarget bounds the target parameter.
	maxProbeTarget = 512
)

var moduleName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// UnmarshalYAML applies defaults before decoding.
func (m *TLSModule) UnmarshalYAML(unmarshal func(any) error) error {
	type tlsModule TLSModule
	p := tlsModule{Protocol: "tls", Timeout: tlsModuleDefaultTimeout}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*m = TLSModule(p)
	return nil
}

func (c ProbeConfig) validate() error {
	if c.MaxConnections < 1 {
		return errors.New("probe.max_connections: must be at least 1")
	}
	if c.MaxTargets < 1 {
		return errors.New("probe.max_targets: must be at least 1")
	}
	if c.IdleTimeout <= 0 {
		return errors.New("probe.idle_timeout: must be positive")
	}
	return nil
}

// validate checks a module decoded from YAML; errors name the field under p.
func (m *Module) validate(p string, probe ProbeConfig) error {
	blocks := []struct {
		typ string
		set bool
	}{{moduleTypePostgres, m.Postgres != nil}, {moduleTypeRedis, m.Redis != nil}, {moduleTypeTLS, m.TLS != nil}}
	switch m.Type {
	case moduleTypePostgres, moduleTypeRedis, moduleTypeTLS:
	case "":
		return fmt.Errorf("%s.type: required (postgres, redis or tls)", p)
	default:
		return fmt.Errorf("%s.type: %q is not one of postgres, redis, tls", p, m.Type)
	}
	for _, b := range blocks {
		if b.set && b.typ != m.Type {
			return fmt.Errorf("%s.%s: only allowed with type %s", p, b.typ, b.typ)
		}
	}
	if len(m.AllowedTargets) == 0 {
		return fmt.Errorf("%s.allowed_targets: at least one host pattern is required (\"*\" allows any host)", p)
	}
	for i, pattern := range m.AllowedTargets {
		if err := validateTargetPattern(pattern); err != nil {
			return fmt.Errorf("%s.allowed_targets[%d]: %w", p, i, err)
		}
	}
	// The backend's own validation, on the settings with a sample address.
	sample := probeTarget{host: "probe.invalid", port: "1"}
	switch m.Type {
	case moduleTypePostgres:
		bp := p + ".postgres"
		if m.Postgres == nil {
			return fmt.Errorf("%s: required: at least dsn (user, database, sslmode; the host comes from the target)", bp)
		}
		if m.Postgres.Name != "" {
			return fmt.Errorf("%s.name: not allowed in a module (the target parameter names the target)", bp)
		}
		if m.Postgres.DSN == "" {
			return fmt.Errorf("%s.dsn: required (user, database, sslmode; the host comes from the target)", bp)
		}
		if err := postgresDSNHasNoAddress(m.Postgres.DSN); err != nil {
			return fmt.Errorf("%s.dsn: %w", bp, err)
		}
		t, err := m.postgresTarget(sample)
		if err != nil {
			return fmt.Errorf("%s.dsn: %w", bp, err)
		}
		if err := t.Validate(bp); err != nil {
			return err
		}
	case moduleTypeRedis:
		bp := p + ".redis"
		if m.Redis != nil && m.Redis.Name != "" {
			return fmt.Errorf("%s.name: not allowed in a module (the target parameter names the target)", bp)
		}
		if m.Redis != nil && m.Redis.Address != "" {
			return fmt.Errorf("%s.address: not allowed in a module (the target parameter is the address)", bp)
		}
		t := m.redisTarget(sample)
		if err := t.Validate(bp); err != nil {
			return err
		}
	case moduleTypeTLS:
		bp := p + ".tls"
		cfg := m.tlsConfig(sample)
		if cfg.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative", bp)
		}
		if err := (&certs.Config{Endpoints: cfg}).Validate(bp); err != nil {
			// Errors name targets[0], which is the probe's target.
			return errors.New(strings.Replace(err.Error(), ".endpoints.targets[0]", "", 1))
		}
	}
	if cost := m.connections(); cost > probe.MaxConnections {
		return fmt.Errorf("%s: a target of this module may hold %d connections, more than probe.max_connections (%d)", p, cost, probe.MaxConnections)
	}
	return nil
}

// connections is what one probed target of the module may hold open
// between probes. A TLS probe holds its connection only while it runs.
func (m *Module) connections() int {
	switch m.Type {
	case moduleTypePostgres:
		return m.Postgres.MaxConnections
	case moduleTypeRedis:
		if m.Redis == nil {
			return redis.DefaultTarget().PoolSize
		}
		return m.Redis.PoolSize
	}
	return 0
}

// probeTarget is a parsed target parameter.
type probeTarget struct {
	host, port string
	// db is the PostgreSQL database name or Redis database number after a
	// slash; empty for the module's.
	db string
}

func (t probeTarget) address() string { return net.JoinHostPort(t.host, t.port) }

// parseProbeTarget reads host[:port][/database]; a port is required for
// tls, where there is no default.
func parseProbeTarget(typ, s string) (probeTarget, error) {
	var t probeTarget
	if s == "" {
		return t, errors.New("required")
	}
	if len(s) > maxProbeTarget {
		return t, fmt.Errorf("longer than %d bytes", maxProbeTarget)
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "@?#\\ \t\r\n") {
		return t, errors.New("want host[:port][/database], without scheme, credentials or parameters")
	}
	hostport := s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		hostport, t.db = s[:i], s[i+1:]
		if typ == moduleTypeTLS {
			return t, errors.New("want host:port (a TLS endpoint has no database)")
		}
		if t.db == "" {
			return t, errors.New("empty database after '/'")
		}
		if typ == moduleTypeRedis {
			if n, err := strconv.Atoi(t.db); err != nil || n < 0 {
				return t, fmt.Errorf("redis database %q: want a number", t.db)
			}
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if typ == moduleTypeTLS {
			return t, errors.New("want host:port")
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), postgresDefaultPort
		if typ == moduleTypeRedis {
			port = redisDefaultPort
		}
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return t, errors.New("want host[:port] (an IPv6 address in brackets)")
		}
	}
	if host == "" {
		return t, errors.New("missing host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return t, fmt.Errorf("port %q: want 1-65535", port)
	}
	t.host, t.port = strings.ToLower(host), port
	return t, nil
}

// String is the target's canonical form: the target label.
func (t probeTarget) String() string {
	if t.db == "" {
		return t.address()
	}
	return t.address() + "/" + t.db
}

func validateTargetPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	if strings.Contains(p, "/") {
		if _, _, err := net.ParseCIDR(p); err != nil {
			return fmt.Errorf("%q: not an IP network: %w", p, err)
		}
		return nil
	}
	host := p
	if h, port, err := net.SplitHostPort(p); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q: want 1-65535", p, port)
		}
		host = h
	}
	if _, err := path.Match(host, ""); err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	return nil
}

// allows says whether a pattern of allowed_targets matches t. Names are
// matched as written, never resolved: an IP network matches IP targets only.
func (m *Module) allows(t probeTarget) bool {
	ip := net.ParseIP(t.host)
	for _, p := range m.AllowedTargets {
		if strings.Contains(p, "/") {
			if _, n, err := net.ParseCIDR(p); err == nil && ip != nil && n.Contains(ip) {
				return true
			}
			continue
		}
		host := p
		if h, port, err := net.SplitHostPort(p); err == nil {
			if port != t.port {
				continue
			}
			host = h
		}
		if ok, _ := path.Match(strings.ToLower(host), t.host); ok {
			return true
		}
	}
	return false
}

// postgresTarget is the module's PostgreSQL settings pointed at t: the
// DSN's host, port and (when t names one) database replaced. A target
// naming a database is about that database: unless the module lists
// databases, its per-database metrics are that database's alone, so that
// probing each of a server's N databases costs N, not N², series and
// size computations.
func (m *Module) postgresTarget(t probeTarget) (postgres.Target, error) {
	pt := *m.Postgres
	pt.Name = t.String()
	if t.db != "" && len(pt.Databases) == 0 {
		pt.Databases = []string{t.db}
	}
	dsn := pt.DSN
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// url's error quotes the DSN, password included.
			return pt, errors.New("not a valid postgres:// URL")
		}
		u.Host = t.address()
		if t.db != "" {
			u.Path, u.RawPath = "/"+t.db, ""
		}
		pt.DSN = u.String()
		return pt, nil
	}
	// In key=value form a later key overrides an earlier one.
	pt.DSN = dsn + " host=" + pgQuote(t.host) + " port=" + t.port
	if t.db != "" {
		pt.DSN += " dbname=" + pgQuote(t.db)
	}
	return pt, nil
}

// pgQuoteEscapes escapes the backslashes and quotes of a quoted value of a
// key=value connection string.
var pgQuoteEscapes = strings.NewReplacer(`\`, `\\`, `'`, `\'`)

// pgQuote quotes a value for a key=value connection string.
func pgQuote(s string) string {
	return "'" + pgQuoteEscapes.Replace(s) + "'"
}

var pgKVAddress = regexp.MustCompile(`(?i)(^|\s)(host|hostaddr|port)\s*=`)

// postgresDSNHasNoAddress refuses a module DSN that names a host or port:
// they come from the target, and a DSN naming one suggests a mistake.
func postgresDSNHasNoAddress(dsn string) error {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return errors.New("not a valid postgres:// URL")
		}
		q := u.Query()
		if u.Host != "" || q.Has("host") || q.Has("hostaddr") || q.Has("port") {
			return errors.New("must not name a host or port: they come from the target parameter (write postgres://user@/database?sslmode=...)")
		}
		return nil
	}
	if pgKVAddress.MatchString(dsn) {
		return errors.New("must not name a host, hostaddr or port: they come from the target parameter")
	}
	return nil
}

// redisTarget is the module's Redis settings pointed at t; a tls block
// makes it rediss://.
func (m *Module) redisTarget(t probeTarget) redis.Target {
	rt := redis.DefaultTarget()
	if m.Redis != nil {
		rt = *m.Redis
	}
	scheme := "redis"
	if rt.TLS != nil {
		scheme = "rediss"
	}
	rt.Name = t.String()
	rt.Address = scheme + "://" + t.address()
	if t.db != "" {
		rt.Address += "/" + t.db
	}
	return rt
}

// tlsConfig is the module's TLS settings as an endpoints configuration of
// the one target t.
func (m *Module) tlsConfig(t probeTarget) *certs.EndpointsConfig {
	tm := TLSModule{Protocol: "tls", Timeout: tlsModuleDefaultTimeout}
	if m.TLS != nil {
		tm = *m.TLS
	}
	return &certs.EndpointsConfig{
		Concurrency: 1,
		Timeout:     tm.Timeout,
		CAFile:      tm.CAFile,
		Targets:     []certs.Endpoint{{Address: t.address(), ServerName: tm.ServerName, Protocol: tm.Protocol}},
	}
}
