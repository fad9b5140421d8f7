// Package postgres collects PostgreSQL server, database, table and
// statement metrics at scrape time, with postgres_exporter's names where it
// measures the same thing.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

func pgDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"target"}, labels...), nil)
}

// Names follow postgres_exporter where it measures the same thing.
var (
	pgUpDesc           = pgDesc("pg_up", "Whether the last scrape could query the PostgreSQL server (1) or not (0).")
	pgStaticDesc       = pgDesc("pg_static", "Server version, as labels; always 1.", "version", "short_version")
	pgMaxConnDesc      = pgDesc("pg_settings_max_connections", "The server's max_connections setting.")
	pgStartTimeDesc    = pgDesc("pg_postmaster_start_time_seconds", "When the server started, in Unix seconds.")
	pgIsReplicaDesc    = pgDesc("pg_replication_is_replica", "Whether the server is in recovery, i.e. a replica (1) or a primary (0).")
	pgReplLagDesc      = pgDesc("pg_replication_lag_seconds", "Replication lag of a replica: age of the last replayed transaction, 0 when all received WAL is replayed. Only reported by replicas.")
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
)

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
	// databases filters the per-database metrics; nil means all.
	databases []string

	// statements is nil until the first scrape has looked for the
	// extension.
	statements atomic.Pointer[pgStatementsState]
}

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
		name:      "postgres/" + t.Name,
		target:    t.Name,
		cfg:       t,
		logger:    logger,
		dsnDB:     pgDSNDatabase(base),
		databases: t.Databases,
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
		// No liveness ping before each use (an extra round trip per
		// scrape): a connection found broken is replaced and the
		// read-only batch retried instead.
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		if t.Password.IsSet() {
			secret := t.Password
			cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
				pw, err := secret.Value()
				if err != nil {
					return fmt.Errorf("password: %w", err)
				}
				cc.Password = pw
				return nil
			}
		}
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
// main metrics come from one pipelined batch (one round trip once the
// connection has prepared its statements); each extra listed database adds
// one concurrent round trip on its own connection.
func (c *Collector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	var (
		wg        sync.WaitGroup
		extraErrs = make([]error, len(c.extra))
	)
	for i, e := range c.extra {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []prometheus.Metric
			err := withPgConn(ctx, e.pool, 2, func(conn *pgx.Conn) error {
				out = out[:0]
				return c.queryTables(ctx, conn, e.datname, &out)
			})
			for _, m := range out {
				ch <- m
			}
			if err != nil {
				extraErrs[i] = fmt.Errorf("tables of database %q: %w", e.datname, err)
			}
		}()
	}

	var (
		out []prometheus.Metric
		up  bool
	)
	err := withPgConn(ctx, c.pool, c.maxConns+1, func(conn *pgx.Conn) error {
		out = out[:0]
		var err error
		up, err = c.scrapeMain(ctx, conn, &out)
		return err
	})
	upValue := 0.0
	if up {
		upValue = 1
	}
	ch <- prometheus.MustNewConstMetric(pgUpDesc, prometheus.GaugeValue, upValue, c.target)
	for _, m := range out {
		ch <- m
	}
	wg.Wait()
	return errors.Join(append([]error{err}, extraErrs...)...)
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

// scrapeMain runs the main batch on conn and appends the metrics to out.
// up reports whether the server answered at all.
func (c *Collector) scrapeMain(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) (up bool, err error) {
	major := pgMajorVersion(conn)
	st := c.statements.Load()
	withStatements := c.cfg.Statements.Enabled && st != nil && st.schema != "" && st.major == major
	up, schema, err := c.mainBatch(ctx, conn, major, st, withStatements, out)
	if err != nil && !up && withStatements && !conn.IsClosed() && ctx.Err() == nil {
		// A statement against a dropped extension fails while being
		// prepared, which fails the whole batch: forget what was known
		// and try again without it.
		c.statements.Store(nil)
		*out = (*out)[:0]
		withStatements = false
		up, schema, err = c.mainBatch(ctx, conn, major, nil, false, out)
	}
	if !up {
		return false, err
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
			// included in the main batch from the next scrape on.
			err = c.statementsBatch(ctx, conn, next, out)
		}
	}
	return true, err
}

// mainBatch sends the main queries (and the statements queries when
// withStatements) in one batch and reads their results in order.
func (c *Collector) mainBatch(ctx context.Context, conn *pgx.Conn, major int, st *pgStatementsState, withStatements bool, out *[]prometheus.Metric) (up bool, schema string, err error) {
	b := &pgx.Batch{}
	b.Queue(pgSettingsQuery)
	b.Queue(pgDatabasesQuery, c.databases)
	b.Queue(pgActivityQuery)
	b.Queue(pgLocksQuery)
	b.Queue(pgCheckpointsQuery(major))
	if c.tablesInMain {
		b.Queue(pgTablesQuery, c.cfg.Tables.TopN)
	}
	if withStatements {
		b.Queue(st.query, c.cfg.Statements.TopN)
		if st.info != "" {
			b.Queue(st.info)
		}
	}
	br := conn.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	// The server answered once its settings row arrives; later failures
	// keep pg_up at 1.
	schema, err = c.readSettings(br, out)
	if err != nil {
		return false, "", err
	}
	dbs, err := c.readDatabases(br, out)
	if err != nil {
		return true, schema, err
	}
	if err := c.readActivity(br, dbs, out); err != nil {
		return true, schema, err
	}
	if err := c.readLocks(br, dbs, out); err != nil {
		return true, schema, err
	}
	var timed, requested float64
	if err := br.QueryRow().Scan(&timed, &requested); err != nil {
		return true, schema, fmt.Errorf("query checkpoints: %w", err)
	}
	*out = append(*out,
		prometheus.MustNewConstMetric(pgCkptTimedDesc, prometheus.CounterValue, timed, c.target),
		prometheus.MustNewConstMetric(pgCkptReqDesc, prometheus.CounterValue, requested, c.target))

	if c.tablesInMain {
		rows, err := br.Query()
		if err != nil {
			return true, schema, fmt.Errorf("query pg_stat_user_tables: %w", err)
		}
		if err := c.readTables(rows, c.dsnDB, out); err != nil {
			return true, schema, err
		}
	}
	if withStatements {
		if err := c.readStatements(br, st, out); err != nil {
			return true, schema, err
		}
	}
	return true, schema, nil
}

// readSettings reads the server-wide row: version, limits, replication
// state, and the schema pg_stat_statements is installed in ("" when it is
// not).
func (c *Collector) readSettings(br pgx.BatchResults, out *[]prometheus.Metric) (schema string, err error) {
	var (
		version             string
		versionNum          int
		maxConns, startTime float64
		inRecovery          bool
		lag                 *float64
		extSchema           *string
	)
	if err := br.QueryRow().Scan(&version, &versionNum, &maxConns, &startTime, &inRecovery, &lag, &extSchema); err != nil {
		return "", fmt.Errorf("query server settings: %w", err)
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
	emit(pgStartTimeDesc, startTime, t)
	if inRecovery {
		emit(pgIsReplicaDesc, 1, t)
		if lag != nil {
			emit(pgReplLagDesc, *lag, t)
		}
	} else {
		emit(pgIsReplicaDesc, 0, t)
	}
	return schema, nil
}

// readDatabases reads the per-database statistics and returns the names of
// the databases reported, which the per-database session and lock counts
// are filled in for.
func (c *Collector) readDatabases(br pgx.BatchResults, out *[]prometheus.Metric) ([]string, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("query pg_stat_database: %w", err)
	}
	defer rows.Close()
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
			return nil, fmt.Errorf("scan pg_stat_database: %w", err)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query pg_stat_database: %w", err)
	}
	return dbs, nil
}

// readActivity reports sessions by state, every known state for every
// reported database (0 when none), and the oldest open transaction.
func (c *Collector) readActivity(br pgx.BatchResults, dbs []string, out *[]prometheus.Metric) error {
	counts := make([]float64, len(dbs)*len(pgActivityStates))
	maxTx := make([]float64, len(dbs))
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("query pg_stat_activity: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			db, state string
			n, age    float64
		)
		if err := rows.Scan(&db, &state, &n, &age); err != nil {
			return fmt.Errorf("scan pg_stat_activity: %w", err)
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
		return fmt.Errorf("query pg_stat_activity: %w", err)
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
func (c *Collector) readLocks(br pgx.BatchResults, dbs []string, out *[]prometheus.Metric) error {
	waiting := make([]float64, len(dbs))
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("query pg_locks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			db string
			n  float64
		)
		if err := rows.Scan(&db, &n); err != nil {
			return fmt.Errorf("scan pg_locks: %w", err)
		}
		if i := slices.Index(dbs, db); i >= 0 {
			waiting[i] = n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query pg_locks: %w", err)
	}
	for i, db := range dbs {
		*out = append(*out, prometheus.MustNewConstMetric(pgLocksWaitingDesc, prometheus.GaugeValue, waiting[i], c.target, db))
	}
	return nil
}

// statementsBatch queries pg_stat_statements on its own (one round trip).
func (c *Collector) statementsBatch(ctx context.Context, conn *pgx.Conn, st *pgStatementsState, out *[]prometheus.Metric) (err error) {
	b := &pgx.Batch{}
	b.Queue(st.query, c.cfg.Statements.TopN)
	if st.info != "" {
		b.Queue(st.info)
	}
	br := conn.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return c.readStatements(br, st, out)
}

func (c *Collector) readStatements(br pgx.BatchResults, st *pgStatementsState, out *[]prometheus.Metric) error {
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("query pg_stat_statements: %w", err)
	}
	defer rows.Close()
	// Labels must be unique even if two entries resolve to the same names
	// (e.g. statements of dropped databases): the first, slowest, wins.
	seen := make(map[[3]string]bool, c.cfg.Statements.TopN)
	for rows.Next() {
		var (
			queryID, db, user            string
			calls, total, mean, rowCount float64
		)
		if err := rows.Scan(&queryID, &db, &user, &calls, &total, &mean, &rowCount); err != nil {
			return fmt.Errorf("scan pg_stat_statements: %w", err)
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
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query pg_stat_statements: %w", err)
	}
	if st.info != "" {
		var dealloc float64
		if err := br.QueryRow().Scan(&dealloc); err != nil {
			return fmt.Errorf("query pg_stat_statements_info: %w", err)
		}
		*out = append(*out, prometheus.MustNewConstMetric(pgStmtDeallocDesc, prometheus.CounterValue, dealloc, c.target))
	}
	return nil
}

// queryTables reports the tables of the database conn is connected to.
func (c *Collector) queryTables(ctx context.Context, conn *pgx.Conn, datname string, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, pgTablesQuery, c.cfg.Tables.TopN)
	if err != nil {
		return fmt.Errorf("query pg_stat_user_tables: %w", err)
	}
	return c.readTables(rows, datname, out)
}

func (c *Collector) readTables(rows pgx.Rows, datname string, out *[]prometheus.Metric) error {
	defer rows.Close()
	for rows.Next() {
		var (
			schema, rel                                             string
			size, live, dead, vacuum, autovacuum, analyze, autoanal float64
		)
		if err := rows.Scan(&schema, &rel, &size, &live, &dead, &vacuum, &autovacuum, &analyze, &autoanal); err != nil {
			return fmt.Errorf("scan pg_stat_user_tables: %w", err)
		}
		l := []string{c.target, datname, schema, rel}
		*out = append(*out,
			prometheus.MustNewConstMetric(pgTableSizeDesc, prometheus.GaugeValue, size, l...),
			prometheus.MustNewConstMetric(pgTableLiveDesc, prometheus.GaugeValue, live, l...),
			prometheus.MustNewConstMetric(pgTableDeadDesc, prometheus.GaugeValue, dead, l...),
			prometheus.MustNewConstMetric(pgTableLastVacuumDesc, prometheus.GaugeValue, vacuum, l...),
			prometheus.MustNewConstMetric(pgTableLastAutoVacDesc, prometheus.GaugeValue, autovacuum, l...),
			prometheus.MustNewConstMetric(pgTableLastAnalyzeDesc, prometheus.GaugeValue, analyze, l...),
			prometheus.MustNewConstMetric(pgTableLastAutoAnDesc, prometheus.GaugeValue, autoanal, l...),
		)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query pg_stat_user_tables: %w", err)
	}
	return nil
}
