package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

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
	// Queries are custom SQL collectors, run after the built-in queries
	// in read-only transactions on the same connections.
	Queries []Query `yaml:"queries"`
}

// TablesConfig bounds the per-table series.
type TablesConfig struct {
	// TopN tables by total size get their own series; the rest are summed
	// into one series with relname="other".
	TopN int `yaml:"top_n"`
	// All reports every table with series of its own and no "other"
	// series; TopN must then be left out.
	All bool `yaml:"all"`
	// topNSet records that the file set top_n, to refuse it beside all.
	topNSet bool
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
	var p struct {
		TopN *int `yaml:"top_n"`
		All  bool `yaml:"all"`
	}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = TablesConfig{TopN: pgDefaultTopN, All: p.All}
	if p.TopN != nil {
		c.TopN, c.topNSet = *p.TopN, true
	}
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
	if t.Tables.All && t.Tables.topNSet {
		return fmt.Errorf("%s.tables.top_n: must be left out with tables.all (every table is reported)", path)
	}
	if !t.Tables.All && (t.Tables.TopN < 1 || t.Tables.TopN > pgMaxTopN) {
		return fmt.Errorf("%s.tables.top_n: must be between 1 and %d, got %d (tables.all: true reports every table)", path, pgMaxTopN, t.Tables.TopN)
	}
	if t.Statements.TopN < 1 || t.Statements.TopN > pgMaxTopN {
		return fmt.Errorf("%s.statements.top_n: must be between 1 and %d, got %d", path, pgMaxTopN, t.Statements.TopN)
	}
	return t.validateQueries(path, pgDSNDatabase(cfg))
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

// Query is a custom SQL collector: one statement whose rows become series.
// Each row gives one series per metric column, labelled with the target,
// the database the query ran in (datname) and the label columns' values.
type Query struct {
	// Name identifies the query: the query label of its own metrics.
	Name string `yaml:"name"`
	// SQL is one statement, run in a read-only transaction.
	SQL string `yaml:"sql"`
	// Metrics maps result columns to metrics.
	Metrics []QueryMetric `yaml:"metrics"`
	// Labels are the result columns whose values label the series.
	Labels []string `yaml:"labels"`
	// Databases the query runs in (default: the DSN's database); each
	// must be the DSN's database or one of the target's databases, whose
	// connections it shares.
	Databases []string `yaml:"databases"`
	// Timeout bounds one run (statement_timeout, set locally); 0 means
	// the target's statement_timeout.
	Timeout time.Duration `yaml:"timeout"`
	// MinInterval is the least time between two runs; scrapes in between
	// serve the values of the last run. 0 runs the query every scrape.
	MinInterval time.Duration `yaml:"min_interval"`
	// MinServerVersion and MaxServerVersion (major versions, 0: no bound)
	// restrict the servers the query runs on.
	MinServerVersion int `yaml:"min_server_version"`
	MaxServerVersion int `yaml:"max_server_version"`
	// MaxSeries caps the series one run yields per database (rows times
	// metric columns); the rows beyond it are dropped and counted.
	MaxSeries int `yaml:"max_series"`
}

// QueryMetric is one metric column of a custom query.
type QueryMetric struct {
	Column string `yaml:"column"`
	Name   string `yaml:"name"`
	// Type is gauge or counter.
	Type string `yaml:"type"`
	Help string `yaml:"help"`
}

const (
	pgDefaultQueryMaxSeries = 100
	pgMaxQueryMaxSeries     = 10000
	pgMaxQueryMinInterval   = 24 * time.Hour
	pgMaxQueries            = 100
)

// UnmarshalYAML applies the query's defaults before decoding.
func (q *Query) UnmarshalYAML(unmarshal func(any) error) error {
	type postgresQuery Query
	p := postgresQuery{MaxSeries: pgDefaultQueryMaxSeries}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*q = Query(p)
	return nil
}

var (
	// pgNameRe is what a query's name and a metric's name must match.
	pgNameRe      = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	pgLabelNameRe = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*$`)
)

// pgReservedPrefixes are metric name prefixes custom queries may not use:
// the exporter's own namespace, the other collectors', the client
// library's and Prometheus's (scrape_*, up).
var pgReservedPrefixes = []string{"warden_", "go_", "process_", "promhttp_", "redis_", "scrape_"}

// pgReservedSuffixes are the suffixes of histogram and summary series,
// which a gauge or counter must not end in.
var pgReservedSuffixes = []string{"_count", "_sum", "_bucket", "_created"}

// pgQueryLabels are the labels every custom query's series carries.
var pgQueryLabels = []string{"target", "datname"}

// validateQueries checks the custom queries; dsnDB is the DSN's database.
func (t *Target) validateQueries(path, dsnDB string) error {
	if len(t.Queries) > pgMaxQueries {
		return fmt.Errorf("%s.queries: at most %d queries, got %d", path, pgMaxQueries, len(t.Queries))
	}
	names := map[string]bool{}
	metrics := map[string]string{}
	for i := range t.Queries {
		q := &t.Queries[i]
		qp := fmt.Sprintf("%s.queries[%d]", path, i)
		if !pgNameRe.MatchString(q.Name) {
			return fmt.Errorf("%s.name: %q must match %s", qp, q.Name, pgNameRe)
		}
		if names[q.Name] {
			return fmt.Errorf("%s.name: %q is already used by another query", qp, q.Name)
		}
		names[q.Name] = true
		if strings.TrimSpace(q.SQL) == "" {
			return fmt.Errorf("%s.sql: required", qp)
		}
		if len(q.Metrics) == 0 {
			return fmt.Errorf("%s.metrics: at least one metric column is required", qp)
		}
		columns := map[string]string{}
		column := func(field, col string) error {
			if col == "" {
				return fmt.Errorf("%s: empty column name", field)
			}
			if prev, ok := columns[col]; ok {
				return fmt.Errorf("%s: column %q is already used by %s (label and metric columns must be distinct)", field, col, prev)
			}
			columns[col] = field
			return nil
		}
		for j, l := range q.Labels {
			field := fmt.Sprintf("%s.labels[%d]", qp, j)
			if err := column(field, l); err != nil {
				return err
			}
			if !pgLabelNameRe.MatchString(l) {
				return fmt.Errorf("%s: %q is not a valid label name (alias the column: SELECT ... AS name); it must match %s", field, l, pgLabelNameRe)
			}
			if slices.Contains(pgQueryLabels, l) {
				return fmt.Errorf("%s: %q is set by the exporter on every series; alias the column to another name", field, l)
			}
		}
		for j, m := range q.Metrics {
			mp := fmt.Sprintf("%s.metrics[%d]", qp, j)
			if err := column(mp+".column", m.Column); err != nil {
				return err
			}
			if err := validateQueryMetricName(mp, m); err != nil {
				return err
			}
			if prev, ok := metrics[m.Name]; ok {
				return fmt.Errorf("%s.name: %q is already defined by %s", mp, m.Name, prev)
			}
			metrics[m.Name] = mp
		}
		seen := map[string]bool{}
		for j, db := range q.Databases {
			field := fmt.Sprintf("%s.databases[%d]", qp, j)
			switch {
			case db == "":
				return fmt.Errorf("%s: empty database name", field)
			case seen[db]:
				return fmt.Errorf("%s: %q is listed twice", field, db)
			case db != dsnDB && !slices.Contains(t.Databases, db):
				return fmt.Errorf("%s: %q is neither the DSN's database (%q) nor in %s.databases, whose connections queries share", field, db, dsnDB, path)
			}
			seen[db] = true
		}
		if q.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative (0: the target's statement_timeout)", qp)
		}
		if q.MinInterval < 0 || q.MinInterval > pgMaxQueryMinInterval {
			return fmt.Errorf("%s.min_interval: must be between 0 (every scrape) and %s", qp, pgMaxQueryMinInterval)
		}
		for field, v := range map[string]int{"min_server_version": q.MinServerVersion, "max_server_version": q.MaxServerVersion} {
			if v != 0 && (v < 9 || v > 99) {
				return fmt.Errorf("%s.%s: a major version such as 14 (0: no bound), got %d", qp, field, v)
			}
		}
		if q.MaxServerVersion != 0 && q.MinServerVersion > q.MaxServerVersion {
			return fmt.Errorf("%s.max_server_version: %d is below min_server_version %d", qp, q.MaxServerVersion, q.MinServerVersion)
		}
		if q.MaxSeries < len(q.Metrics) || q.MaxSeries > pgMaxQueryMaxSeries {
			return fmt.Errorf("%s.max_series: must be between the number of metric columns (%d) and %d, got %d", qp, len(q.Metrics), pgMaxQueryMaxSeries, q.MaxSeries)
		}
	}
	return nil
}

// validateQueryMetricName checks a custom metric's name, type and help
// under the field path mp.
func validateQueryMetricName(mp string, m QueryMetric) error {
	if !pgNameRe.MatchString(m.Name) {
		return fmt.Errorf("%s.name: %q is not a valid metric name; it must match %s", mp, m.Name, pgNameRe)
	}
	if pgBuiltinNames[m.Name] || m.Name == "up" {
		return fmt.Errorf("%s.name: %q is a built-in metric of the postgres collector", mp, m.Name)
	}
	for _, p := range pgReservedPrefixes {
		if strings.HasPrefix(m.Name, p) {
			return fmt.Errorf("%s.name: %q: the prefix %q is reserved for the exporter's own metrics", mp, m.Name, p)
		}
	}
	for _, s := range pgReservedSuffixes {
		if strings.HasSuffix(m.Name, s) {
			return fmt.Errorf("%s.name: %q: the suffix %q is reserved for histograms and summaries", mp, m.Name, s)
		}
	}
	switch m.Type {
	case "counter":
		if !strings.HasSuffix(m.Name, "_total") {
			return fmt.Errorf("%s.name: %q: a counter's name must end in _total", mp, m.Name)
		}
	case "gauge":
		if strings.HasSuffix(m.Name, "_total") {
			return fmt.Errorf("%s.name: %q: only a counter's name may end in _total", mp, m.Name)
		}
	case "":
		return fmt.Errorf("%s.type: required (gauge or counter)", mp)
	default:
		return fmt.Errorf("%s.type: %q is not gauge or counter", mp, m.Type)
	}
	if !utf8.ValidString(m.Help) {
		return fmt.Errorf("%s.help: not valid UTF-8", mp)
	}
	return nil
}

// CheckQueryMetrics checks that the custom metrics of several targets,
// which share one exposition, agree: a metric name used by two targets
// must have the same type, help and labels in both. Target i's path is
// prefix[i].
func CheckQueryMetrics(prefix string, targets []Target) error {
	type def struct{ path, sig string }
	defs := map[string]def{}
	for i, t := range targets {
		for j, q := range t.Queries {
			for k, m := range q.Metrics {
				path := fmt.Sprintf("%s[%d].queries[%d].metrics[%d]", prefix, i, j, k)
				sig := fmt.Sprintf("type %s, help %q, labels %v", m.Type, queryMetricHelp(q, m), q.Labels)
				if prev, ok := defs[m.Name]; ok && prev.sig != sig {
					return fmt.Errorf("%s.name: %q is also defined by %s with another type, help or labels (%s; here %s)", path, m.Name, prev.path, prev.sig, sig)
				}
				if _, ok := defs[m.Name]; !ok {
					defs[m.Name] = def{path, sig}
				}
			}
		}
	}
	return nil
}

// queryMetricHelp is the help text of a custom metric.
func queryMetricHelp(q Query, m QueryMetric) string {
	if m.Help != "" {
		return m.Help
	}
	return fmt.Sprintf("Column %s of the custom query %s.", m.Column, q.Name)
}
