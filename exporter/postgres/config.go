package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warden-sre/warden/internal/secret"
)

// Target configures the postgres collector for one server.
type Target struct {
	Name string `yaml:"name"`
	// DSN is a postgres:// URL or a key=value connection string. A password
	// may be written in it, but Password is the better place.
	DSN string `yaml:"dsn"`
	// Password, when set, replaces any password in the DSN. It is read
	// again for every new connection, so a rotated file is picked up.
	Password secret.Secret `yaml:"password"`
	// MaxConnections is a hard cap on the connections the exporter holds to
	// this server, whatever the number of concurrent scrapes.
	MaxConnections int `yaml:"max_connections"`
	// StatementTimeout bounds each query of a scrape (statement_timeout),
	// and at most half the time the scrape has left.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// LockTimeout bounds how long a query of a scrape waits for a lock
	// (lock_timeout), and at most a quarter of the time the scrape has
	// left: a table locked by a migration or VACUUM FULL fails the tables
	// query quickly instead of holding up the scrape.
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// ConnectTimeout bounds establishing one connection.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Databases restricts the per-database metrics to these databases
	// (default: every connectable non-template database) and turns on
	// per-table metrics for each of them (default: the DSN's database
	// only). Each listed database other than the DSN's takes one of the
	// MaxConnections.
	Databases  []string         `yaml:"databases"`
	Tables     TablesConfig     `yaml:"tables"`
	Statements StatementsConfig `yaml:"statements"`
}

// TablesConfig bounds the per-table series.
type TablesConfig struct {
	// TopN tables by total size get their own series; the rest are summed
	// into one series with relname="other".
	TopN int `yaml:"top_n"`
}

// StatementsConfig configures the pg_stat_statements metrics.
type StatementsConfig struct {
	Enabled bool `yaml:"enabled"`
	// TopN statements by mean execution time are reported.
	TopN int `yaml:"top_n"`
}

const (
	pgDefaultMaxConnections   = 2
	pgMaxMaxConnections       = 20
	pgDefaultStatementTimeout = 5 * time.Second
	pgDefaultLockTimeout      = time.Second
	pgDefaultConnectTimeout   = 3 * time.Second
	pgDefaultTopN             = 20
	pgMaxTopN                 = 1000
	pgApplicationName         = "warden-exporter"
)

// DefaultTarget is a target with every default filled in; a file's
// settings are decoded on top of it, and targets built in code start from
// it.
func DefaultTarget() Target {
	return Target{
		MaxConnections:   pgDefaultMaxConnections,
		StatementTimeout: pgDefaultStatementTimeout,
		LockTimeout:      pgDefaultLockTimeout,
		ConnectTimeout:   pgDefaultConnectTimeout,
		Tables:           TablesConfig{TopN: pgDefaultTopN},
		Statements:       StatementsConfig{TopN: pgDefaultTopN},
	}
}

// UnmarshalYAML applies defaults before decoding. It uses the decoder's own
// unmarshal function so that strict decoding (unknown fields) still applies.
func (t *Target) UnmarshalYAML(unmarshal func(any) error) error {
	// The decoder names this type in "field not found" errors.
	type postgresTarget Target
	p := postgresTarget(DefaultTarget())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*t = Target(p)
	return nil
}

// UnmarshalYAML keeps the default top_n when the mapping leaves it out.
func (c *TablesConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type postgresTables TablesConfig
	p := postgresTables{TopN: pgDefaultTopN}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = TablesConfig(p)
	return nil
}

// UnmarshalYAML keeps the default top_n when the mapping leaves it out.
func (c *StatementsConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type postgresStatements StatementsConfig
	p := postgresStatements{TopN: pgDefaultTopN}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = StatementsConfig(p)
	return nil
}

// Validate checks a target decoded from YAML (defaults applied); errors
// name the field under path. Names (required, unique) are the exporter's
// to check across targets.
func (t *Target) Validate(path string) error {
	if t.DSN == "" {
		return fmt.Errorf("%s.dsn: required", path)
	}
	cfg, err := ParseDSN(t.DSN)
	if err != nil {
		return fmt.Errorf("%s.dsn: %w", path, err)
	}
	if err := t.Password.Validate(); err != nil {
		return fmt.Errorf("%s.password: %w", path, err)
	}
	if t.MaxConnections < 1 || t.MaxConnections > pgMaxMaxConnections {
		return fmt.Errorf("%s.max_connections: must be between 1 and %d, got %d", path, pgMaxMaxConnections, t.MaxConnections)
	}
	if t.StatementTimeout <= 0 {
		return fmt.Errorf("%s.statement_timeout: must be positive", path)
	}
	if t.ConnectTimeout <= 0 {
		return fmt.Errorf("%s.connect_timeout: must be positive", path)
	}
	if t.LockTimeout <= 0 {
		return fmt.Errorf("%s.lock_timeout: must be positive", path)
	}
	seen := map[string]bool{}
	for i, db := range t.Databases {
		if db == "" {
			return fmt.Errorf("%s.databases[%d]: empty database name", path, i)
		}
		if seen[db] {
			return fmt.Errorf("%s.databases[%d]: %q is listed twice", path, i, db)
		}
		seen[db] = true
	}
	if extra := len(pgExtraDatabases(t.Databases, pgDSNDatabase(cfg))); extra >= t.MaxConnections {
		return fmt.Errorf("%s.databases: per-table metrics for %d databases besides the DSN's need one connection each plus one for the DSN's: raise max_connections to at least %d", path, extra, extra+1)
	}
	if t.Tables.TopN < 1 || t.Tables.TopN > pgMaxTopN {
		return fmt.Errorf("%s.tables.top_n: must be between 1 and %d, got %d", path, pgMaxTopN, t.Tables.TopN)
	}
	if t.Statements.TopN < 1 || t.Statements.TopN > pgMaxTopN {
		return fmt.Errorf("%s.statements.top_n: must be between 1 and %d, got %d", path, pgMaxTopN, t.Statements.TopN)
	}
	return nil
}

// ParseDSN parses a DSN into a pool configuration. Its error never
// contains the DSN's password: pgx redacts on a best-effort basis only, so
// the DSN is cut out of the message and anything that looks like a password
// in it is masked again.
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err == nil {
		return cfg, nil
	}
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `<dsn>`: <reason>": keep the reason only.
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		}
	}
	return nil, fmt.Errorf("invalid DSN: %s", redactPostgresPasswords(msg, dsn))
}

var (
	pgURLPassword = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/]*:(.*)@`)
	pgKVPassword  = regexp.MustCompile(`(?i)(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)`)
	pgURLQueryPW  = regexp.MustCompile(`(?i)[?&](?:ssl)?password=([^&]*)`)
)

// redactPostgresPasswords masks in msg every string that the DSN could be
// using as a password, in URL or key=value form.
func redactPostgresPasswords(msg, dsn string) string {
	var candidates []string
	if m := pgURLPassword.FindStringSubmatch(dsn); m != nil {
		candidates = append(candidates, m[1])
		// A password containing '@' is cut at the last '@' by the pattern;
		// mask each piece too.
		candidates = append(candidates, strings.Split(m[1], "@")...)
	}
	for _, m := range pgKVPassword.FindAllStringSubmatch(dsn, -1) {
		candidates = append(candidates, m[1], strings.Trim(m[1], "'"))
	}
	for _, m := range pgURLQueryPW.FindAllStringSubmatch(dsn, -1) {
		candidates = append(candidates, m[1])
	}
	for _, c := range candidates {
		if len(c) >= 1 {
			msg = strings.ReplaceAll(msg, c, "xxxxx")
		}
	}
	return msg
}

// pgDSNDatabase is the database a parsed DSN connects to (the user name
// when the DSN names none, as in libpq).
func pgDSNDatabase(cfg *pgxpool.Config) string {
	if cfg.ConnConfig.Database != "" {
		return cfg.ConnConfig.Database
	}
	return cfg.ConnConfig.User
}

// pgExtraDatabases lists the databases whose tables need a connection of
// their own, i.e. listed ones other than the DSN's.
func pgExtraDatabases(listed []string, dsnDB string) []string {
	var extra []string
	for _, db := range listed {
		if db != dsnDB {
			extra = append(extra, db)
		}
	}
	return extra
}

// UsePassword makes every new connection of the pool read pw, so that a
// pool kept across reloads still picks up a rotated password file. An
// unset pw leaves the DSN's password.
func UsePassword(cfg *pgxpool.Config, pw secret.Secret) {
	if !pw.IsSet() {
		return
	}
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		v, err := pw.Value()
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		cc.Password = v
		return nil
	}
}
