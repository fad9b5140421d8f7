// Package postgres collects PostgreSQL server, database, table and
// statement metrics at scrape time, with postgres_exporter's names where it
// measures the same thing.
package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// pgBuiltinNames are the names of the collector's own metrics, which
// custom queries may not reuse.
var pgBuiltinNames = map[string]bool{}

func pgDesc(name, help string, labels ...string) *prometheus.Desc {
	pgBuiltinNames[name] = true
	return prometheus.NewDesc(name, help, append([]string{"target"}, labels...), nil)
}

// Names follow postgres_exporter where it measures the same thing.
var (
	pgUpDesc           = pgDesc("pg_up", "Whether the last scrape could query the PostgreSQL server (1) or not (0).")
	pgStaticDesc       = pgDesc("pg_static", "Server version, as labels; always 1.", "version", "short_version")
	pgMaxConnDesc      = pgDesc("pg_settings_max_connections", "The server's max_connections setting.")
	pgSuperResDesc     = pgDesc("pg_settings_superuser_reserved_connections", "The server's superuser_reserved_connections setting.")
	pgReservedDesc     = pgDesc("pg_settings_reserved_connections", "The server's reserved_connections setting (PostgreSQL 16+); 0 before 16, which has no such setting.")
	pgStartTimeDesc    = pgDesc("pg_postmaster_start_time_seconds", "When the server started, in Unix seconds.")
	pgIsReplicaDesc    = pgDesc("pg_replication_is_replica", "Whether the server is in recovery, i.e. a replica (1) or a primary (0).")
	pgReplLagDesc      = pgDesc("pg_replication_lag_seconds", "Replication lag of a replica: age of the last replayed transaction, 0 when all received WAL is replayed. Only reported by replicas.")
	pgWalRecvDesc      = pgDesc("warden_postgres_wal_receiver_streaming", "Whether the replica's WAL receiver is streaming from the primary (1) or not running or not streaming (0). Only reported by replicas.")
	pgWalReceiptDesc   = pgDesc("warden_postgres_wal_receiver_last_receipt_timestamp_seconds", "When the replica's WAL receiver last received a message (WAL or keepalive) from the primary, in Unix seconds. Only reported while a WAL receiver runs.")
	pgNumBackendsDesc  = pgDesc("pg_stat_database_numbackends", "Number of backends connected to the database.", "datname")
	pgXactCommitDesc   = pgDesc("pg_stat_database_xact_commit_total", "Transactions committed in the database.", "datname")
	pgXactRollbackDesc = pgDesc("pg_stat_database_xact_rollback_total", "Transactions rolled back in the database.", "datname")
	pgDeadlocksDesc    = pgDesc("pg_stat_database_deadlocks_total", "Deadlocks detected in the database.", "datname")
	pgBlksReadDesc     = pgDesc("pg_stat_database_blks_read_total", "Disk blocks read in the database.", "datname")
	pgBlksHitDesc      = pgDesc("pg_stat_database_blks_hit_total", "Disk blocks found in the buffer cache in the database.", "datname")
	pgTempBytesDesc    = pgDesc("pg_stat_database_temp_bytes_total", "Bytes written to temporary files by queries in the database.", "datname")
	pgConflictsDesc    = pgDesc("pg_stat_database_conflicts_total", "Queries cancelled by recovery conflicts in the database (replicas only).", "datname")
	pgDBSizeDesc       = pgDesc("pg_database_size_bytes", "Disk space used by the database. Missing when the exporter's user may not connect to it.", "datname")
	pgWraparoundDesc   = pgDesc("pg_database_wraparound_age_datfrozenxid", "Age of the database's oldest unfrozen transaction ID (transaction-ID wraparound happens near 2^31).", "datname")
	pgActivityDesc     = pgDesc("warden_postgres_activity_connections", "Client sessions by database and state.", "datname", "state")
	pgMaxTxDesc        = pgDesc("pg_stat_activity_max_tx_duration", "Age in seconds of the oldest open transaction in the database, 0 when none is open.", "datname")
	pgLocksWaitingDesc = pgDesc("pg_locks_waiting", "Lock requests waiting to be granted, by the database of the waiting session.", "datname")
	pgCkptTimedDesc    = pgDesc("pg_stat_bgwriter_checkpoints_timed_total", "Scheduled checkpoints performed.")
	pgCkptReqDesc      = pgDesc("pg_stat_bgwriter_checkpoints_req_total", "Requested checkpoints performed.")

	pgTableLabels          = []string{"datname", "schemaname", "relname"}
	pgTableSizeDesc        = pgDesc("pg_stat_user_tables_size_bytes", "Total size of the table with its indexes and TOAST, for the largest tables; relname=\"other\" sums the rest.", pgTableLabels...)
	pgTableLiveDesc        = pgDesc("pg_stat_user_tables_n_live_tup", "Estimated live rows; relname=\"other\" sums the tables not listed.", pgTableLabels...)
	pgTableDeadDesc        = pgDesc("pg_stat_user_tables_n_dead_tup", "Estimated dead rows; relname=\"other\" sums the tables not listed.", pgTableLabels...)
	pgTableLastVacuumDesc  = pgDesc("pg_stat_user_tables_last_vacuum_timestamp_seconds", "Last manual vacuum in Unix seconds, 0 if never; for relname=\"other\" the oldest among the rest.", pgTableLabels...)
	pgTableLastAutoVacDesc = pgDesc("pg_stat_user_tables_last_autovacuum_timestamp_seconds", "Last autovacuum in Unix seconds, 0 if never; for relname=\"other\" the oldest among the rest.", pgTableLabels...)
	pgTableLastAnalyzeDesc = pgDesc("pg_stat_user_tables_last_analyze_timestamp_seconds", "Last manual analyze in Unix seconds, 0 if never; for relname=\"other\" the oldest among the rest.", pgTableLabels...)
	pgTableLastAutoAnDesc  = pgDesc("pg_stat_user_tables_last_autoanalyze_timestamp_seconds", "Last autoanalyze in Unix seconds, 0 if never; for relname=\"other\" the oldest among the rest.", pgTableLabels...)

	pgStmtLabels      = []string{"datname", "user", "queryid"}
	pgStmtCallsDesc   = pgDesc("pg_stat_statements_calls_total", "Times the statement was executed (top statements by mean time).", pgStmtLabels...)
	pgStmtSecondsDesc = pgDesc("pg_stat_statements_seconds_total", "Total execution time of the statement (top statements by mean time).", pgStmtLabels...)
	pgStmtMeanDesc    = pgDesc("pg_stat_statements_mean_seconds", "Mean execution time of the statement (top statements by mean time).", pgStmtLabels...)
	pgStmtRowsDesc    = pgDesc("pg_stat_statements_rows_total", "Rows retrieved or affected by the statement (top statements by mean time).", pgStmtLabels...)
	pgStmtDeallocDesc = pgDesc("warden_postgres_stat_statements_dealloc_total", "pg_stat_statements entries evicted because pg_stat_statements.max was reached (PostgreSQL 14+).")

	pgAcceptsDesc       = pgDesc("warden_postgres_accepts_connections", "Whether the server answered on a fresh connection at the last check (1) or not (0); checked at most once a minute. pg_up stays 1 on pooled sessions while the postmaster is stopped.")
	pgQueryFailuresDesc = pgDesc("warden_postgres_query_failures_total", "Scrapes in which the query family failed (lock or statement timeout, error) while the server answered; its series are missing from those scrapes.", "query")
)

// The scrape's query families: the query label of
// warden_postgres_query_failures_total.
const (
	pgFamilySettings    = "settings"
	pgFamilyDatabases   = "databases"
	pgFamilyActivity    = "activity"
	pgFamilyLocks       = "locks"
	pgFamilyCheckpoints = "checkpoints"
	pgFamilyStatements  = "statements"
	pgFamilyTables      = "tables"
)

var pgFamilies = []string{
	pgFamilySettings, pgFamilyDatabases, pgFamilyActivity, pgFamilyLocks,
	pgFamilyCheckpoints, pgFamilyStatements, pgFamilyTables,
}

// pgActivityStates are the pg_stat_activity states reported for every
// database, 0 when no session is in them, so that series do not come and go.
var pgActivityStates = []string{
	"active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath function call", "disabled",
}

// pgStatementsState is what the collector last saw of pg_stat_statements.
type pgStatementsState struct {
	schema string // "" when the extension is not installed
	major  int
	query  string // statements query for this schema and version
	info   string // pg_stat_statements_info query, "" before 14
}

type pgTablePool struct {
	datname string
	pool    *pgxpool.Pool
}

// Collector reports one PostgreSQL server. It satisfies the exporter's
// collector contract (Name, Collect, Close).
type Collector struct {
	name     string
	target   string
	cfg      Target
	logger   *slog.Logger
	pool     *pgxpool.Pool
	maxConns int
	// dsnDB is the database the main pool connects to; tablesInMain says
	// whether its tables are reported.
	dsnDB        string
	tablesInMain bool
	extra        []pgTablePool
	// databasesArg is the configured databases (the per-database filter;
	// nil means all) as a text-format text[] parameter.
	databasesArg []byte
	// failures counts each query family's failures (pgFamilies).
	failures map[string]*atomic.Uint64
	// custom are the custom queries by the database they run in.
	custom map[string][]*pgCustomState

	// statements is nil until the first scrape has looked for the
	// extension.
	statements atomic.Pointer[pgStatementsState]

	// acceptsInterval is how often a scrape checks that the server
	// answers a fresh connection; acceptsNext is when the next check is
	// due and accepts the last result (-1 before the first).
	acceptsInterval time.Duration
	acceptsMu       sync.Mutex
	acceptsNext     time.Time
	accepts         atomic.Int32
}

// pgAcceptsInterval is how often the server's answer on a fresh connection
// is checked: a stopped or overwhelmed postmaster is noticed within a
// minute, for one short connection a minute.
const pgAcceptsInterval = time.Minute

// pgSSLRequest is PostgreSQL's SSLRequest message: length 8, then the
// request code 80877103, both big-endian.
var pgSSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// pgDialWrapper wraps every connection the pools open; tests use it to
// count round trips.
type pgDialWrapper func(net.Conn) net.Conn

// New builds the collector for a validated target. Pools connect lazily,
// so a server that is down does not fail construction: it shows as pg_up 0.
func New(t Target, logger *slog.Logger) (*Collector, error) {
	return newWithDial(t, logger, nil)
}

func newWithDial(t Target, logger *slog.Logger, wrap pgDialWrapper) (*Collector, error) {
	path := "postgres[" + t.Name + "]"
	base, err := ParseDSN(t.DSN)
	if err != nil {
		return nil, fmt.Errorf("%s.dsn: %w", path, err)
	}
	c := &Collector{
		name:     "postgres/" + t.Name,
		target:   t.Name,
		cfg:      t,
		logger:   logger,
		dsnDB:    pgDSNDatabase(base),
		failures: map[string]*atomic.Uint64{},

		acceptsInterval: pgAcceptsInterval,
	}
	c.accepts.Store(-1)
	for _, f := range pgFamilies {
		c.failures[f] = new(atomic.Uint64)
	}
	if t.Databases != nil {
		c.databasesArg = pgTextArray(t.Databases)
	}
	c.custom = map[string][]*pgCustomState{}
	for _, q := range t.Queries {
		cq := newCustomQuery(q)
		dbs := q.Databases
		if len(dbs) == 0 {
			dbs = []string{c.dsnDB}
		}
		for _, db := range dbs {
			c.custom[db] = append(c.custom[db], &pgCustomState{q: cq, datname: db})
		}
	}
	extraDBs := pgExtraDatabases(t.Databases, c.dsnDB)
	c.tablesInMain = len(t.Databases) == 0 || len(extraDBs) < len(t.Databases)

	configure := func(cfg *pgxpool.Config, maxConns int) {
		cfg.MaxConns = int32(maxConns)
		cfg.MinConns = 0
		cfg.ConnConfig.ConnectTimeout = t.ConnectTimeout
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = pgApplicationName
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(t.StatementTimeout.Milliseconds(), 10)
		cfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(t.LockTimeout.Milliseconds(), 10)
		// No liveness ping before each use (an extra round trip per
		// scrape): a connection found broken is replaced and the
		// read-only batch retried instead.
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		UsePassword(cfg, t.Password)
		if wrap != nil {
			dial := cfg.ConnConfig.DialFunc
			cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return wrap(conn), nil
			}
		}
		dial := cfg.ConnConfig.DialFunc
		cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &pgSessionConn{Conn: conn}, nil
		}
	}

	// NewWithConfig opens no connection (MinConns is 0) and keeps no
	// context; the constructor has none to pass.
	mainCfg := base.Copy()
	c.maxConns = t.MaxConnections - len(extraDBs)
	configure(mainCfg, c.maxConns)
	if c.pool, err = pgxpool.NewWithConfig(context.Background(), mainCfg); err != nil {
		return nil, fmt.Errorf("%s: create pool: %w", path, err)
	}
	for _, db := range extraDBs {
		cfg := base.Copy()
		cfg.ConnConfig.Database = db
		configure(cfg, 1)
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: create pool for database %q: %w", path, db, err)
		}
		c.extra = append(c.extra, pgTablePool{datname: db, pool: pool})
	}
	return c, nil
}

// Name is "postgres/" and the target's name.
func (c *Collector) Name() string { return c.name }

// Close closes the target's connections.
func (c *Collector) Close() error {
	if c.pool != nil {
		c.pool.Close()
	}
	for _, e := range c.extra {
		e.pool.Close()
	}
	return nil
}

// Collect sends pg_up and, when the server answers, everything else. The
// main metrics come from one pipeline of queries (one round trip), each
// family in its own implicit transaction so that one that fails (a table
// locked by a migration, a statement timeout) leaves the others' metrics in
// place; each extra listed database adds one concurrent round trip on its
// own connection.
func (c *Collector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	var (
		wg        sync.WaitGroup
		extraErrs = make([]error, len(c.extra))
	)
	for i, e := range c.extra {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				out       []prometheus.Metric
				ranCustom bool
			)
			err := withPgConn(ctx, e.pool, 2, func(conn *pgx.Conn) error {
				out = out[:0]
				var err error
				ranCustom, err = c.scrapeTables(ctx, conn, e.datname, &out)
				return err
			})
			var notRun error
			if !ranCustom {
				notRun = err
			}
			out = c.collectCustom(e.datname, notRun, out)
			for _, m := range out {
				ch <- m
			}
			if err != nil {
				extraErrs[i] = fmt.Errorf("tables of database %q: %w", e.datname, err)
			}
		}()
	}

	if c.acceptsDue() {
		wg.Go(func() {
			v := int32(0)
			if err := c.checkAccepts(ctx); err == nil {
				v = 1
			} else {
				c.logger.Warn("the server did not answer a fresh connection", "err", err)
			}
			c.accepts.Store(v)
		})
	}

	var (
		out       []prometheus.Metric
		up        bool
		ranCustom bool
	)
	err := withPgConn(ctx, c.pool, c.maxConns+1, func(conn *pgx.Conn) error {
		out = out[:0]
		var err error
		up, ranCustom, err = c.scrapeMain(ctx, conn, &out)
		return err
	})
	notRun := err
	if ranCustom {
		notRun = nil
	}
	out = c.collectCustom(c.dsnDB, notRun, out)
	upValue := 0.0
	if up {
		upValue = 1
	}
	ch <- prometheus.MustNewConstMetric(pgUpDesc, prometheus.GaugeValue, upValue, c.target)
	for _, m := range out {
		ch <- m
	}
	wg.Wait()
	if v := c.accepts.Load(); v >= 0 {
		ch <- prometheus.MustNewConstMetric(pgAcceptsDesc, prometheus.GaugeValue, float64(v), c.target)
	}
	for _, family := range pgFamilies {
		ch <- prometheus.MustNewConstMetric(pgQueryFailuresDesc, prometheus.CounterValue, float64(c.failures[family].Load()), c.target, family)
	}
	return errors.Join(append([]error{err}, extraErrs...)...)
}

// acceptsDue reports whether this scrape should check the server's answer
// on a fresh connection, and if so takes the turn from concurrent scrapes.
func (c *Collector) acceptsDue() bool {
	c.acceptsMu.Lock()
	defer c.acceptsMu.Unlock()
	now := time.Now()
	if now.Before(c.acceptsNext) {
		return false
	}
	c.acceptsNext = now.Add(c.acceptsInterval)
	return true
}

// checkAccepts opens a fresh connection to the server and sends an
// SSLRequest, which the server answers ('S' or 'N') from the process the
// postmaster forks for the connection: an answer shows that new
// connections are served, while pooled sessions can keep answering with
// the postmaster stopped. No session starts, so the check takes none of
// max_connections and needs no password; after 'S' the TLS handshake is
// completed so that the server does not log an aborted one. It is bounded
// by connect_timeout and half the time the scrape has left.
func (c *Collector) checkAccepts(ctx context.Context) error {
	timeout := c.cfg.ConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl)/2)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc := c.pool.Config().ConnConfig
	network, addr := pgconn.NetworkAddress(cc.Host, cc.Port)
	conn, err := cc.DialFunc(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if s, ok := conn.(*pgSessionConn); ok {
		conn = s.Conn // no session: nothing for the server to end
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	if err := conn.SetDeadline(dl); err != nil {
		return err
	}
	if _, err := conn.Write(pgSSLRequest); err != nil {
		return fmt.Errorf("send SSLRequest: %w", err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return fmt.Errorf("read SSLRequest answer: %w", err)
	}
	switch answer[0] {
	case 'N':
		return nil
	case 'S':
		// Nothing secret crosses: the chain is not checked.
		_ = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: cc.Host}).HandshakeContext(ctx)
		return nil
	default:
		return fmt.Errorf("unexpected answer %q to SSLRequest", answer[0])
	}
}

// pgSessionCloseWait bounds how long closing a session waits for the
// server to end it.
const pgSessionCloseWait = 500 * time.Millisecond

// pgSessionConn is a session's connection whose Close waits, briefly, for
// the server to close its end: pgx has sent Terminate, and the server
// closes the socket once the backend has exited, which is when
// pg_stat_activity stops listing it. A closed pool's sessions are then
// gone as the server counts them, so connection caps hold as PostgreSQL
// sees them also while pools are replaced (reloads, /probe's pools).
type pgSessionConn struct{ net.Conn }

func (c *pgSessionConn) Close() error {
	if c.Conn.SetReadDeadline(time.Now().Add(pgSessionCloseWait)) == nil {
		_, _ = io.Copy(io.Discard, c.Conn)
	}
	return c.Conn.Close()
}

// withPgConn runs f on a pooled connection. When f fails because the
// connection broke (server restarted, session terminated) while ctx is still
// alive, it retries on another connection, up to attempts times. f must be
// safe to repeat: it only reads.
func withPgConn(ctx context.Context, pool *pgxpool.Pool, attempts int, f func(*pgx.Conn) error) error {
	var err error
	for range attempts {
		conn, acqErr := pool.Acquire(ctx)
		if acqErr != nil {
			if err != nil {
				return fmt.Errorf("acquire connection: %w (after: %w)", acqErr, err)
			}
			return fmt.Errorf("acquire connection: %w", acqErr)
		}
		err = f(conn.Conn())
		broken := conn.Conn().IsClosed()
		// A connection closed or still busy (abandoned mid-query on
		// ctx's end) is destroyed by Release rather than reused.
		conn.Release()
		if err == nil || !broken || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// pgTextArray is names as a text[] literal in PostgreSQL's text format.
func pgTextArray(names []string) []byte {
	b := []byte{'{'}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for _, r := range []byte(n) {
			if r == '"' || r == '\\' {
				b = append(b, '\\')
			}
			b = append(b, r)
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// pgMajorVersion reads the major version from the server_version the
// server reported at connection start, so choosing version-specific queries
// costs no round trip.
func pgMajorVersion(conn *pgx.Conn) int {
	v := conn.PgConn().ParameterStatus("server_version")
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	major, _ := strconv.Atoi(v[:end])
	return major
}

// pgQuery is one query of a scrape's pipeline. read consumes its rows and
// must close them.
type pgQuery struct {
	// family names the metrics the query yields, the query label of
	// warden_postgres_query_failures_total; "" for the timeouts statement.
	family string
	sql    string
	// args are text-format parameters; nil is NULL.
	args [][]byte
	read func(pgx.Rows) error
	// textResults asks for the results in text format rather than binary
	// (custom queries, whose column types are not known in advance).
	textResults bool
	// custom is the custom query run the statement belongs to; its
	// errors are the run's, not a family's.
	custom *pgCustomRun
}

// pgBinaryResults asks for every result column in binary format: every
// column the queries return (text, float8, int4, bool) has one.
var pgBinaryResults = []int16{pgtype.BinaryFormatCode}

// runPipeline sends queries in one pipeline, each followed by a Sync, and
// reads their results in order: all of them take one round trip, and each
// runs in an implicit transaction of its own, so one that fails (a lock
// timeout, a statement timeout, any error) does not abort the ones after
// it. The queries are prepared once per connection (the first scrape on a
// connection makes one more round trip per query), which halves the
// server's work per scrape against parsing and planning them every time.
// errs[i] is query i's own error. answered reports whether the server
// answered the first query at all (rows or an error); connErr is set when
// the connection failed, and the queries not read by then have no error of
// their own.
func runPipeline(ctx context.Context, conn *pgx.Conn, queries []pgQuery) (errs []error, answered bool, connErr error) {
	errs = make([]error, len(queries))
	stmts := make([]*pgconn.StatementDescription, len(queries))
	for i, q := range queries {
		// Named after the query's text, so a query whose text changes
		// (pg_stat_statements moved to another schema) is prepared anew.
		sd, err := conn.Prepare(ctx, q.sql, q.sql)
		if conn.IsClosed() {
			return errs, answered, fmt.Errorf("prepare: %w", err)
		}
		if err != nil {
			// The server answered, with an error (a dropped extension).
			errs[i] = fmt.Errorf("prepare: %w", err)
			answered = true
		}
		stmts[i] = sd
	}
	p := conn.PgConn().StartPipeline(ctx)
	for i, q := range queries {
		if stmts[i] != nil {
			formats := pgBinaryResults
			if q.textResults {
				formats = nil
			}
			p.SendQueryStatement(stmts[i], q.args, nil, formats)
			p.SendPipelineSync()
		}
	}
	if err := p.Flush(); err != nil {
		_ = p.Close()
		return errs, false, err
	}
	for i, q := range queries {
		if stmts[i] == nil {
			continue
		}
		res, err := p.GetResults()
		if err == nil {
			if rr, ok := res.(*pgconn.ResultReader); ok {
				err = q.read(pgx.RowsFromResultReader(conn.TypeMap(), rr))
			} else {
				err = fmt.Errorf("unexpected pipeline result %T", res)
			}
		}
		if conn.IsClosed() {
			connErr = err
			break
		}
		errs[i] = err
		answered = true
		// A failed statement's error may also arrive here, in place of
		// the Sync's answer (a commit that fails).
		if _, err := p.GetResults(); err != nil {
			if conn.IsClosed() {
				connErr = err
				break
			}
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	if err := p.Close(); err != nil && connErr == nil {
		connErr = err
	}
	if connErr == nil && conn.IsClosed() {
		connErr = errors.New("connection closed")
	}
	for i, err := range errs {
		// A prepared query whose result columns changed (an extension
		// updated in place) fails until it is prepared again.
		var pgErr *pgconn.PgError
		if connErr == nil && errors.As(err, &pgErr) && pgErr.Code == "0A000" { // feature_not_supported: "cached plan must not change result type"
			if derr := conn.Deallocate(ctx, queries[i].sql); derr != nil && conn.IsClosed() {
				connErr = derr
			}
		}
	}
	return errs, answered, connErr
}

// timeoutsQuery sets the session's statement_timeout and lock_timeout for
// this scrape: the configured ones, shortened to half and a quarter of the
// time left before ctx's deadline, so that a query blocked on a lock or
// running long fails on the server, alone, while the connection and the
// other queries' results are still good. It is the first, cheap query of
// each scrape: its answer is what pg_up reports.
func (c *Collector) timeoutsQuery(ctx context.Context) pgQuery {
	statement, lock := c.cfg.StatementTimeout, c.cfg.LockTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		statement, lock = min(statement, left/2), min(lock, left/4)
	}
	ms := func(d time.Duration) []byte { return strconv.AppendInt(nil, max(d.Milliseconds(), 1), 10) }
	return pgQuery{sql: pgTimeoutsQuery, args: [][]byte{ms(statement), ms(lock)}, read: func(rows pgx.Rows) error {
		rows.Close()
		return rows.Err()
	}}
}

// familyQuery is a query of family whose metrics read appends to out;
// when it fails, what it appended is taken back, so a family is reported
// whole or not at all.
func familyQuery(family, sql string, args [][]byte, out *[]prometheus.Metric, read func(pgx.Rows) error) pgQuery {
	return pgQuery{family: family, sql: sql, args: args, read: func(rows pgx.Rows) error {
		defer rows.Close()
		n := len(*out)
		err := read(rows)
		if err != nil {
			*out = (*out)[:n]
		}
		return err
	}}
}

// runFamilies runs queries through runPipeline, counts each family that
// failed once, and returns whether the server answered, the connection's
// error and all errors. A custom query's errors go to its run only.
func (c *Collector) runFamilies(ctx context.Context, conn *pgx.Conn, queries []pgQuery) (answered bool, failed map[string]bool, connErr, err error) {
	errs, answered, connErr := runPipeline(ctx, conn, queries)
	failed = map[string]bool{}
	var all []error
	for i, qerr := range errs {
		if qerr == nil {
			continue
		}
		if r := queries[i].custom; r != nil {
			r.fail(qerr)
			continue
		}
		family := queries[i].family
		if family == "" {
			all = append(all, fmt.Errorf("set scrape timeouts: %w", qerr))
			continue
		}
		all = append(all, fmt.Errorf("query %s: %w", family, qerr))
		if !failed[family] {
			failed[family] = true
			c.failures[family].Add(1)
		}
	}
	if connErr != nil {
		all = append(all, connErr)
	}
	return answered, failed, connErr, errors.Join(all...)
}

// scrapeMain runs the main pipeline on conn and appends the metrics to out.
// up reports whether the server answered at all, ranCustom whether the
// custom queries of the DSN's database had their turn.
func (c *Collector) scrapeMain(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) (up, ranCustom bool, err error) {
	major := pgMajorVersion(conn)
	st := c.statements.Load()
	withStatements := c.cfg.Statements.Enabled && st != nil && st.schema != "" && st.major == major
	var (
		schema string
		// dbs are the databases reported, which the per-database
		// session and lock counts are filled in for.
		dbs []string
	)
	queries := []pgQuery{
		c.timeoutsQuery(ctx),
		familyQuery(pgFamilySettings, pgSettingsQuery, nil, out, func(rows pgx.Rows) (err error) {
			schema, err = c.readSettings(rows, out)
			return err
		}),
		familyQuery(pgFamilyDatabases, pgDatabasesQuery, [][]byte{c.databasesArg}, out, func(rows pgx.Rows) (err error) {
			dbs, err = c.readDatabases(rows, out)
			return err
		}),
		familyQuery(pgFamilyActivity, pgActivityQuery, nil, out, func(rows pgx.Rows) error {
			return c.readActivity(rows, dbs, out)
		}),
		familyQuery(pgFamilyLocks, pgLocksQuery, nil, out, func(rows pgx.Rows) error {
			return c.readLocks(rows, dbs, out)
		}),
		familyQuery(pgFamilyCheckpoints, pgCheckpointsQuery(major), nil, out, func(rows pgx.Rows) error {
			return c.readCheckpoints(rows, out)
		}),
	}
	if withStatements {
		queries = append(queries, c.statementsQueries(st, out)...)
	}
	// Last, as the one most likely to wait for a lock (a table's size
	// needs a lock on it): the others' answers are in by then.
	if c.tablesInMain {
		queries = append(queries, c.tablesQuery(c.dsnDB, out))
	}
	// Custom queries last: the built-in families' answers are in before
	// any of them runs.
	custom, runs := c.customQueries(ctx, c.dsnDB, major)
	queries = append(queries, custom...)
	up, failed, connErr, err := c.runFamilies(ctx, conn, queries)
	c.finishCustom(runs, connErr)
	if !up || failed[pgFamilySettings] {
		// Without the settings row the extension's schema is unknown:
		// keep what was known.
		return up, true, err
	}
	if st == nil || st.schema != schema || st.major != major {
		next := &pgStatementsState{schema: schema, major: major}
		if schema != "" {
			next.query, next.info = pgStatementsQueries(schema, major)
		}
		c.statements.Store(next)
		if c.cfg.Statements.Enabled {
			if schema == "" {
				c.logger.Warn("statements are enabled but the pg_stat_statements extension is not installed in the DSN's database; create it to get pg_stat_statements_* metrics", "database", c.dsnDB)
			} else {
				c.logger.Debug("pg_stat_statements found", "schema", schema)
			}
		}
		if err == nil && c.cfg.Statements.Enabled && schema != "" && !withStatements {
			// First sight of the extension: one more round trip now,
			// included in the main pipeline from the next scrape on.
			_, _, _, err = c.runFamilies(ctx, conn, c.statementsQueries(next, out))
		}
	}
	return true, true, err
}

// scrapeTables reports the tables of the database conn is connected to,
// under this scrape's timeouts, and runs the custom queries of that
// database that are due.
func (c *Collector) scrapeTables(ctx context.Context, conn *pgx.Conn, datname string, out *[]prometheus.Metric) (ranCustom bool, err error) {
	custom, runs := c.customQueries(ctx, datname, pgMajorVersion(conn))
	queries := append([]pgQuery{c.timeoutsQuery(ctx), c.tablesQuery(datname, out)}, custom...)
	_, _, connErr, err := c.runFamilies(ctx, conn, queries)
	c.finishCustom(runs, connErr)
	return true, err
}

func (c *Collector) tablesQuery(datname string, out *[]prometheus.Metric) pgQuery {
	sql, args := pgTablesQuery, [][]byte{strconv.AppendInt(nil, int64(c.cfg.Tables.TopN), 10)}
	if c.cfg.Tables.All {
		sql, args = pgTablesAllQuery, nil
	}
	return familyQuery(pgFamilyTables, sql, args, out, func(rows pgx.Rows) error {
		return c.readTables(rows, datname, out)
	})
}

// statementsQueries are the pg_stat_statements queries for st.
func (c *Collector) statementsQueries(st *pgStatementsState, out *[]prometheus.Metric) []pgQuery {
	qs := []pgQuery{familyQuery(pgFamilyStatements, st.query, [][]byte{strconv.AppendInt(nil, int64(c.cfg.Statements.TopN), 10)}, out, func(rows pgx.Rows) error {
		return c.readStatements(rows, out)
	})}
	if st.info != "" {
		qs = append(qs, familyQuery(pgFamilyStatements, st.info, nil, out, func(rows pgx.Rows) error {
			return c.readStatementsInfo(rows, out)
		}))
	}
	return qs
}

// pgOneRow moves rows to its only row, or fails.
func pgOneRow(rows pgx.Rows) error {
	if rows.Next() {
		return nil
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return pgx.ErrNoRows
}

// readSettings reads the server-wide row: version, limits, replication and
// WAL receiver state, and the schema pg_stat_statements is installed in (""
// when it is not).
func (c *Collector) readSettings(rows pgx.Rows, out *[]prometheus.Metric) (schema string, err error) {
	var (
		version                                      string
		versionNum                                   int
		maxConns, superReserved, reserved, startTime float64
		inRecovery                                   bool
		lag                                          *float64
		walStreaming                                 *bool
		walLastReceipt                               *float64
		extSchema                                    *string
	)
	if err := pgOneRow(rows); err != nil {
		return "", err
	}
	if err := rows.Scan(&version, &versionNum, &maxConns, &superReserved, &reserved, &startTime, &inRecovery, &lag, &walStreaming, &walLastReceipt, &extSchema); err != nil {
		return "", err
	}
	if extSchema != nil {
		schema = *extSchema
	}
	t := c.target
	emit := func(desc *prometheus.Desc, v float64, labels ...string) {
		*out = append(*out, prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...))
	}
	emit(pgStaticDesc, 1, t, version, fmt.Sprintf("%d.%d.0", versionNum/10000, versionNum%10000))
	emit(pgMaxConnDesc, maxConns, t)
	emit(pgSuperResDesc, superReserved, t)
	emit(pgReservedDesc, reserved, t)
	emit(pgStartTimeDesc, startTime, t)
	if inRecovery {
		emit(pgIsReplicaDesc, 1, t)
		if lag != nil {
			emit(pgReplLagDesc, *lag, t)
		}
		if walStreaming != nil {
			v := 0.0
			if *walStreaming {
				v = 1
			}
			emit(pgWalRecvDesc, v, t)
		}
		if walLastReceipt != nil {
			emit(pgWalReceiptDesc, *walLastReceipt, t)
		}
	} else {
		emit(pgIsReplicaDesc, 0, t)
	}
	return schema, nil
}

// readDatabases reads the per-database statistics and returns the names of
// the databases reported.
func (c *Collector) readDatabases(rows pgx.Rows, out *[]prometheus.Metric) ([]string, error) {
	t := c.target
	emit := func(desc *prometheus.Desc, vt prometheus.ValueType, v float64, labels ...string) {
		*out = append(*out, prometheus.MustNewConstMetric(desc, vt, v, labels...))
	}
	var dbs []string
	for rows.Next() {
		var (
			name                                                                 string
			backends, commit, rollback, deadlocks, blksRead, blksHit, temp, conf float64
			size                                                                 *float64
			frozenAge                                                            float64
		)
		if err := rows.Scan(&name, &backends, &commit, &rollback, &deadlocks, &blksRead, &blksHit, &temp, &conf, &size, &frozenAge); err != nil {
			return nil, err
		}
		dbs = append(dbs, name)
		emit(pgNumBackendsDesc, prometheus.GaugeValue, backends, t, name)
		emit(pgXactCommitDesc, prometheus.CounterValue, commit, t, name)
		emit(pgXactRollbackDesc, prometheus.CounterValue, rollback, t, name)
		emit(pgDeadlocksDesc, prometheus.CounterValue, deadlocks, t, name)
		emit(pgBlksReadDesc, prometheus.CounterValue, blksRead, t, name)
		emit(pgBlksHitDesc, prometheus.CounterValue, blksHit, t, name)
		emit(pgTempBytesDesc, prometheus.CounterValue, temp, t, name)
		emit(pgConflictsDesc, prometheus.CounterValue, conf, t, name)
		if size != nil {
			emit(pgDBSizeDesc, prometheus.GaugeValue, *size, t, name)
		}
		emit(pgWraparoundDesc, prometheus.GaugeValue, frozenAge, t, name)
	}
	return dbs, rows.Err()
}

// readActivity reports sessions by state, every known state for every
// reported database (0 when none), and the oldest open transaction.
func (c *Collector) readActivity(rows pgx.Rows, dbs []string, out *[]prometheus.Metric) error {
	counts := make([]float64, len(dbs)*len(pgActivityStates))
	maxTx := make([]float64, len(dbs))
	for rows.Next() {
		var (
			db, state string
			n, age    float64
		)
		if err := rows.Scan(&db, &state, &n, &age); err != nil {
			return err
		}
		i := slices.Index(dbs, db)
		if i < 0 {
			continue
		}
		if s := slices.Index(pgActivityStates, state); s >= 0 {
			counts[i*len(pgActivityStates)+s] += n
		}
		maxTx[i] = max(maxTx[i], age)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, db := range dbs {
		for s, state := range pgActivityStates {
			*out = append(*out, prometheus.MustNewConstMetric(pgActivityDesc, prometheus.GaugeValue, counts[i*len(pgActivityStates)+s], c.target, db, state))
		}
		*out = append(*out, prometheus.MustNewConstMetric(pgMaxTxDesc, prometheus.GaugeValue, maxTx[i], c.target, db))
	}
	return nil
}

// readLocks reports the lock requests waiting in each reported database.
func (c *Collector) readLocks(rows pgx.Rows, dbs []string, out *[]prometheus.Metric) error {
	waiting := make([]float64, len(dbs))
	for rows.Next() {
		var (
			db string
			n  float64
		)
		if err := rows.Scan(&db, &n); err != nil {
			return err
		}
		if i := slices.Index(dbs, db); i >= 0 {
			waiting[i] = n
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, db := range dbs {
		*out = append(*out, prometheus.MustNewConstMetric(pgLocksWaitingDesc, prometheus.GaugeValue, waiting[i], c.target, db))
	}
	return nil
}

func (c *Collector) readCheckpoints(rows pgx.Rows, out *[]prometheus.Metric) error {
	var timed, requested float64
	if err := pgOneRow(rows); err != nil {
		return err
	}
	if err := rows.Scan(&timed, &requested); err != nil {
		return err
	}
	*out = append(*out,
		prometheus.MustNewConstMetric(pgCkptTimedDesc, prometheus.CounterValue, timed, c.target),
		prometheus.MustNewConstMetric(pgCkptReqDesc, prometheus.CounterValue, requested, c.target))
	return nil
}

func (c *Collector) readStatements(rows pgx.Rows, out *[]prometheus.Metric) error {
	// Labels must be unique even if two entries resolve to the same names
	// (e.g. statements of dropped databases): the first, slowest, wins.
	seen := make(map[[3]string]bool, c.cfg.Statements.TopN)
	for rows.Next() {
		var (
			queryID, db, user            string
			calls, total, mean, rowCount float64
		)
		if err := rows.Scan(&queryID, &db, &user, &calls, &total, &mean, &rowCount); err != nil {
			return err
		}
		key := [3]string{db, user, queryID}
		if seen[key] {
			continue
		}
		seen[key] = true
		*out = append(*out,
			prometheus.MustNewConstMetric(pgStmtCallsDesc, prometheus.CounterValue, calls, c.target, db, user, queryID),
			prometheus.MustNewConstMetric(pgStmtSecondsDesc, prometheus.CounterValue, total, c.target, db, user, queryID),
			prometheus.MustNewConstMetric(pgStmtMeanDesc, prometheus.GaugeValue, mean, c.target, db, user, queryID),
			prometheus.MustNewConstMetric(pgStmtRowsDesc, prometheus.CounterValue, rowCount, c.target, db, user, queryID),
		)
	}
	return rows.Err()
}

func (c *Collector) readStatementsInfo(rows pgx.Rows, out *[]prometheus.Metric) error {
	var dealloc float64
	if err := pgOneRow(rows); err != nil {
		return err
	}
	if err := rows.Scan(&dealloc); err != nil {
		return err
	}
	*out = append(*out, prometheus.MustNewConstMetric(pgStmtDeallocDesc, prometheus.CounterValue, dealloc, c.target))
	return nil
}

// readTables reports each table row as seven gauges sharing one set of
// label pairs (pgTableRow): with tables.all a scrape builds thousands of
// series, and the label pairs are most of their cost.
func (c *Collector) readTables(rows pgx.Rows, datname string, out *[]prometheus.Metric) error {
	defer rows.Close()
	target := pgLabelPair(&pgLabelTarget, c.target)
	db := pgLabelPair(&pgLabelDatname, datname)
	for rows.Next() {
		r := new(pgTableRow)
		var v [len(pgTableDescs)]float64
		if err := rows.Scan(&r.schemaV, &r.relV, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]); err != nil {
			return err
		}
		r.schemaV, r.relV = strings.ToValidUTF8(r.schemaV, "\uFFFD"), strings.ToValidUTF8(r.relV, "\uFFFD")
		r.schema = dto.LabelPair{Name: &pgLabelSchemaname, Value: &r.schemaV}
		r.rel = dto.LabelPair{Name: &pgLabelRelname, Value: &r.relV}
		// Sorted by name, as the registry expects.
		r.labels = [4]*dto.LabelPair{db, &r.rel, &r.schema, target}
		for i, d := range pgTableDescs {
			r.metrics[i] = pgRowGauge{desc: d, value: v[i], labels: r.labels[:]}
			*out = append(*out, &r.metrics[i])
		}
	}
	return rows.Err()
}

// pgTableDescs are the per-table gauges, in the order of the tables
// queries' value columns.
var pgTableDescs = [...]*prometheus.Desc{
	pgTableSizeDesc, pgTableLiveDesc, pgTableDeadDesc,
	pgTableLastVacuumDesc, pgTableLastAutoVacDesc, pgTableLastAnalyzeDesc, pgTableLastAutoAnDesc,
}

var (
	pgLabelTarget     = "target"
	pgLabelDatname    = "datname"
	pgLabelSchemaname = "schemaname"
	pgLabelRelname    = "relname"
)

func pgLabelPair(name *string, value string) *dto.LabelPair {
	v := strings.ToValidUTF8(value, "\uFFFD")
	return &dto.LabelPair{Name: name, Value: &v}
}

// pgTableRow is one table's series, allocated together.
type pgTableRow struct {
	schemaV, relV string
	schema, rel   dto.LabelPair
	labels        [4]*dto.LabelPair
	metrics       [len(pgTableDescs)]pgRowGauge
}

// pgRowGauge is a gauge whose label pairs are shared with the other
// gauges of its row. Like a const metric it never changes once built.
type pgRowGauge struct {
	desc   *prometheus.Desc
	value  float64
	labels []*dto.LabelPair
}

func (m *pgRowGauge) Desc() *prometheus.Desc { return m.desc }

func (m *pgRowGauge) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Gauge = &dto.Gauge{Value: &m.value}
	return nil
}
