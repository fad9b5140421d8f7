package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The PostgreSQL collector's queries. They are sent together as one
// pipeline per scrape (one round trip), each in an implicit transaction of
// its own, so that one failing (a table locked by a migration makes the
// tables query wait for its lock until lock_timeout) does not abort the
// others. Every number is cast to float8 so that the scan side does not
// depend on whether a server version returns bigint, numeric or double for
// a column.

// pgTimeoutsQuery sets the session's statement_timeout ($1) and
// lock_timeout ($2), in milliseconds, for the queries that follow it. It is
// the first query of every scrape, and its answer is what pg_up reports.
const pgTimeoutsQuery = `SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)`

// pgSettingsQuery returns one row: server version, limits, replication state
// and the schema pg_stat_statements is installed in (NULL when it is not).
//
// reserved_connections exists from PostgreSQL 16 on; before, it reads 0,
// so that max_connections minus both reserves is what ordinary roles may
// use on every version. current_setting(name, true) returns NULL for a
// setting the server does not know, and ” for a placeholder that was once
// set: both mean none reserved.
//
// The replication lag follows postgres_exporter: 0 when everything received
// has been replayed, otherwise the age of the last replayed transaction.
//
// The WAL receiver columns are NULL on a primary. On a replica, streaming
// is false when no receiver is running (no row in pg_stat_wal_receiver) or
// it is not streaming, and NULL when the receiver's status is hidden from
// a role without pg_read_all_stats: unknown is not reported as down. The
// last receipt is NULL when no receiver is running or it is hidden.
const pgSettingsQuery = `SELECT
	version(),
	current_setting('server_version_num')::int,
	current_setting('max_connections')::float8,
	current_setting('superuser_reserved_connections')::float8,
	COALESCE(NULLIF(current_setting('reserved_connections', true), ''), '0')::float8,
	EXTRACT(EPOCH FROM pg_postmaster_start_time())::float8,
	pg_is_in_recovery(),
	CASE
		WHEN NOT pg_is_in_recovery() THEN NULL
		WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
		ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()))::float8
	END,
	CASE WHEN pg_is_in_recovery() THEN
		(SELECT CASE WHEN count(*) = 0 THEN false ELSE bool_or(status = 'streaming') END
		   FROM pg_catalog.pg_stat_wal_receiver)
	END,
	CASE WHEN pg_is_in_recovery() THEN
		(SELECT max(EXTRACT(EPOCH FROM last_msg_receipt_time))::float8
		   FROM pg_catalog.pg_stat_wal_receiver)
	END,
	(SELECT n.nspname::text
	   FROM pg_catalog.pg_extension e
	   JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
	  WHERE e.extname = 'pg_stat_statements')`

// pgDatabasesQuery returns per-database statistics for connectable,
// non-template, valid databases, optionally restricted to the names in $1
// (NULL: all). The size needs CONNECT on the database or pg_read_all_stats;
// without either it is NULL rather than failing the whole query.
const pgDatabasesQuery = `SELECT
	d.datname::text,
	COALESCE(s.numbackends, 0)::float8,
	COALESCE(s.xact_commit, 0)::float8,
	COALESCE(s.xact_rollback, 0)::float8,
	COALESCE(s.deadlocks, 0)::float8,
	COALESCE(s.blks_read, 0)::float8,
	COALESCE(s.blks_hit, 0)::float8,
	COALESCE(s.temp_bytes, 0)::float8,
	COALESCE(s.conflicts, 0)::float8,
	CASE WHEN has_database_privilege(d.oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'MEMBER')
		THEN pg_database_size(d.oid)::float8 END,
	age(d.datfrozenxid)::float8
FROM pg_catalog.pg_database d
LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
WHERE d.datallowconn AND NOT d.datistemplate AND d.datconnlimit <> -2
	AND ($1::text[] IS NULL OR d.datname = ANY($1::text[]))
ORDER BY d.datname`

// pgActivityQuery counts client sessions per database and state, with the
// age of the oldest open transaction among them.
const pgActivityQuery = `SELECT
	datname::text,
	state,
	count(*)::float8,
	COALESCE(GREATEST(0, max(EXTRACT(EPOCH FROM now() - xact_start))), 0)::float8
FROM pg_catalog.pg_stat_activity
WHERE datname IS NOT NULL AND state IS NOT NULL
GROUP BY datname, state`

// pgLocksQuery counts lock requests not yet granted, per database of the
// waiting session. Joining on the session rather than pg_locks.database also
// counts waits on transaction IDs, which have no database.
const pgLocksQuery = `SELECT a.datname::text, count(*)::float8
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname IS NOT NULL
GROUP BY a.datname`

// Checkpoint counters moved from pg_stat_bgwriter to pg_stat_checkpointer
// in PostgreSQL 17.
const (
	pgCheckpointsQueryBefore17 = `SELECT checkpoints_timed::float8, checkpoints_req::float8 FROM pg_catalog.pg_stat_bgwriter`
	pgCheckpointsQuery17       = `SELECT num_timed::float8, num_requested::float8 FROM pg_catalog.pg_stat_checkpointer`
)

func pgCheckpointsQuery(major int) string {
	if major >= 17 {
		return pgCheckpointsQuery17
	}
	return pgCheckpointsQueryBefore17
}

// pgTablesQuery returns the $1 largest user tables of the connected database
// by total relation size (table, indexes, TOAST), then exactly one row
// schemaname = relname = 'other' for all the rest: sizes and tuple counts
// summed, and for each maintenance time the oldest among the remaining
// tables that have one (0 when none has). For the listed tables a
// maintenance time of 0 means never, as in postgres_exporter.
//
// A table another session holds or awaits an ACCESS EXCLUSIVE lock on (a
// migration's ALTER TABLE, VACUUM FULL, TRUNCATE, LOCK TABLE) is left out:
// its size cannot be read without waiting for the lock. Any other lock
// that blocks (an index being rebuilt) ends in lock_timeout, failing the
// query.
const pgTablesQuery = `WITH locked AS (
	SELECT relation FROM pg_catalog.pg_locks
	WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
		AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
), t AS (
	SELECT
		schemaname::text AS schemaname,
		relname::text AS relname,
		pg_total_relation_size(relid)::float8 AS size_bytes,
		COALESCE(n_live_tup, 0)::float8 AS n_live_tup,
		COALESCE(n_dead_tup, 0)::float8 AS n_dead_tup,
		EXTRACT(EPOCH FROM last_vacuum)::float8 AS last_vacuum,
		EXTRACT(EPOCH FROM last_autovacuum)::float8 AS last_autovacuum,
		EXTRACT(EPOCH FROM last_analyze)::float8 AS last_analyze,
		EXTRACT(EPOCH FROM last_autoanalyze)::float8 AS last_autoanalyze
	FROM pg_catalog.pg_stat_user_tables
	WHERE relid NOT IN (SELECT relation FROM locked)
), ranked AS (
	SELECT t.*, row_number() OVER (ORDER BY size_bytes DESC, schemaname, relname) AS rank FROM t
)
SELECT schemaname, relname, size_bytes, n_live_tup, n_dead_tup,
	COALESCE(last_vacuum, 0), COALESCE(last_autovacuum, 0),
	COALESCE(last_analyze, 0), COALESCE(last_autoanalyze, 0)
FROM ranked WHERE rank <= $1
UNION ALL
SELECT 'other', 'other',
	COALESCE(sum(size_bytes), 0), COALESCE(sum(n_live_tup), 0), COALESCE(sum(n_dead_tup), 0),
	COALESCE(min(last_vacuum), 0), COALESCE(min(last_autovacuum), 0),
	COALESCE(min(last_analyze), 0), COALESCE(min(last_autoanalyze), 0)
FROM ranked WHERE rank > $1`

// pgTablesAllQuery returns every user table of the connected database,
// with the same columns as pgTablesQuery and no ranking or overflow row
// (tables.all). Tables locked as in pgTablesQuery are left out.
const pgTablesAllQuery = `WITH locked AS (
	SELECT relation FROM pg_catalog.pg_locks
	WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
		AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
)
SELECT
	schemaname::text,
	relname::text,
	pg_total_relation_size(relid)::float8,
	COALESCE(n_live_tup, 0)::float8,
	COALESCE(n_dead_tup, 0)::float8,
	COALESCE(EXTRACT(EPOCH FROM last_vacuum), 0)::float8,
	COALESCE(EXTRACT(EPOCH FROM last_autovacuum), 0)::float8,
	COALESCE(EXTRACT(EPOCH FROM last_analyze), 0)::float8,
	COALESCE(EXTRACT(EPOCH FROM last_autoanalyze), 0)::float8
FROM pg_catalog.pg_stat_user_tables
WHERE relid NOT IN (SELECT relation FROM locked)`

// pgStatementsQuery is formatted with the extension's quoted schema and a
// version-specific filter, and returns the $1 statements with the highest
// mean execution time. It calls pg_stat_statements(false) so the server does
// not read the query texts, which are never exported.
//
// PostgreSQL 13 renamed total_time/mean_time to total_exec_time/mean_exec_time
// (13 is the oldest supported version). From 14 on a statement can appear
// twice, as a top-level and as a nested statement; only top-level entries
// are reported so that labels stay unique.
const pgStatementsQuery = `SELECT
	s.queryid::text,
	COALESCE(d.datname::text, ''),
	COALESCE(r.rolname::text, ''),
	s.calls::float8,
	(s.total_exec_time / 1000)::float8,
	(s.mean_exec_time / 1000)::float8,
	s.rows::float8
FROM %s.pg_stat_statements(false) s
LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.userid
WHERE s.queryid IS NOT NULL%s
ORDER BY s.mean_exec_time DESC
LIMIT $1`

// pgStatementsInfoQuery (PostgreSQL 14+) counts entries evicted because
// pg_stat_statements.max was reached.
const pgStatementsInfoQuery = `SELECT dealloc::float8 FROM %s.pg_stat_statements_info`

// pgStatementsQueries returns the statements queries for the extension
// installed in schema on a server of the given major version; info is
// empty before 14.
func pgStatementsQueries(schema string, major int) (statements, info string) {
	quoted := pgx.Identifier{schema}.Sanitize()
	if major >= 14 {
		return fmt.Sprintf(pgStatementsQuery, quoted, " AND s.toplevel"), fmt.Sprintf(pgStatementsInfoQuery, quoted)
	}
	return fmt.Sprintf(pgStatementsQuery, quoted, ""), ""
}
