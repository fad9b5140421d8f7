package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Custom SQL collectors (the target's queries). Each run is four statements
// appended to the scrape's pipeline, each followed by a Sync, so it costs
// no extra round trip:
//
//	BEGIN READ ONLY
//	SELECT set_config('statement_timeout', $1, true)   -- SET LOCAL
//	<the query>
//	ROLLBACK
//
// The query runs in a read-only transaction, so a statement that writes
// (INSERT, CREATE, nextval) is refused by the server; the transaction is
// always rolled back. The extended protocol refuses more than one
// statement in the query's text, so it cannot end the transaction and go
// on. A failing query (an error, its timeout) aborts only its own
// transaction: the ROLLBACK after its Sync still runs, and the built-in
// families and the other queries are unaffected.

var (
	pgCustomLabels      = []string{"query", "datname"}
	pgCustomSuccessDesc = pgDesc("warden_postgres_custom_query_success", "Whether the last run of the custom query in the database succeeded (1) or failed (0).", pgCustomLabels...)
	pgCustomDurDesc     = pgDesc("warden_postgres_custom_query_duration_seconds", "How long the last run of the custom query in the database took.", pgCustomLabels...)
	pgCustomAgeDesc     = pgDesc("warden_postgres_custom_query_age_seconds", "Seconds since the values served for the custom query were read (0 when read by this scrape; grows up to min_interval).", pgCustomLabels...)
	pgCustomDroppedDesc = pgDesc("warden_postgres_custom_query_series_dropped", "Series the last run of the custom query dropped because its rows exceeded max_series.", pgCustomLabels...)
)

const (
	pgBeginReadOnly = "BEGIN READ ONLY"
	pgRollback      = "ROLLBACK"
	// pgLocalTimeout is SET LOCAL statement_timeout with the value as a
	// parameter, so that its prepared statement does not change with it.
	pgLocalTimeout = "SELECT set_config('statement_timeout', $1, true)"
)

// pgCustomQuery is a configured query with its descriptors.
type pgCustomQuery struct {
	cfg   Query
	descs []*prometheus.Desc
	types []prometheus.ValueType
	// maxRows is the rows one run keeps: max_series over the metric
	// columns.
	maxRows int
}

func newCustomQuery(q Query) *pgCustomQuery {
	cq := &pgCustomQuery{cfg: q, maxRows: q.MaxSeries / len(q.Metrics)}
	labels := append(slices.Clone(pgQueryLabels), q.Labels...)
	for _, m := range q.Metrics {
		cq.descs = append(cq.descs, prometheus.NewDesc(m.Name, queryMetricHelp(q, m), labels, nil))
		vt := prometheus.GaugeValue
		if m.Type == "counter" {
			vt = prometheus.CounterValue
		}
		cq.types = append(cq.types, vt)
	}
	return cq
}

// pgCustomState is one custom query in one database, with the values of
// its last successful run, which are served until it is due again.
type pgCustomState struct {
	q       *pgCustomQuery
	datname string

	mu sync.Mutex
	// running is set while a scrape runs the query; concurrent scrapes
	// serve the last values instead of running it again.
	running bool
	nextRun time.Time
	// skipped is set when the server's version is outside the query's
	// bounds: nothing is reported.
	skipped  bool
	ran      bool
	ok       bool
	metrics  []prometheus.Metric
	readAt   time.Time
	duration time.Duration
	dropped  int
	lastErr  string
}

// claim reports whether the query is to run now on a server of the given
// major version, and if so marks it running.
func (s *pgCustomState) claim(now time.Time, major int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.q.cfg
	if (q.MinServerVersion != 0 && major < q.MinServerVersion) || (q.MaxServerVersion != 0 && major > q.MaxServerVersion) {
		s.skipped, s.ran, s.ok, s.metrics = true, false, false, nil
		return false
	}
	s.skipped = false
	if s.running || now.Before(s.nextRun) {
		return false
	}
	s.running = true
	return true
}

// missed records that the query was due but this scrape could not run it
// (no connection): it fails, unless another scrape is running it.
func (s *pgCustomState) missed(now time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.skipped || now.Before(s.nextRun) {
		return
	}
	s.failLocked(fmt.Errorf("not run: %w", err))
}

func (s *pgCustomState) failLocked(err error) {
	s.ran, s.ok, s.metrics, s.dropped = true, false, nil, 0
	// Retried at the next scrape, not after min_interval.
	s.nextRun = time.Time{}
	s.lastErr = err.Error()
}

// collect appends what the query reports: its success, duration and
// dropped series once it has run, and its last values with their age.
func (s *pgCustomState) collect(target string, now time.Time, out []prometheus.Metric) []prometheus.Metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.skipped || !s.ran {
		return out
	}
	name := s.q.cfg.Name
	gauge := func(d *prometheus.Desc, v float64) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, target, name, s.datname))
	}
	success := 0.0
	if s.ok {
		success = 1
	}
	gauge(pgCustomSuccessDesc, success)
	gauge(pgCustomDurDesc, s.duration.Seconds())
	gauge(pgCustomDroppedDesc, float64(s.dropped))
	if s.ok {
		gauge(pgCustomAgeDesc, max(0, now.Sub(s.readAt).Seconds()))
		out = append(out, s.metrics...)
	}
	return out
}

// pgCustomRun is one run of a custom query within a scrape's pipeline.
type pgCustomRun struct {
	st         *pgCustomState
	target     string
	start, end time.Time
	done       bool
	err        error
	metrics    []prometheus.Metric
	dropped    int
}

// fail records the first error of the run's statements.
func (r *pgCustomRun) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// finish stores the run's outcome; connErr is the pipeline's connection
// error, if any.
func (r *pgCustomRun) finish(connErr error, logger interface {
	Warn(string, ...any)
}) {
	s := r.st
	if r.end.IsZero() {
		r.end = time.Now()
	}
	if r.start.IsZero() {
		r.start = r.end
	}
	err := r.err
	if err == nil && !r.done {
		err = errors.New("not run: the connection failed")
		if connErr != nil {
			err = fmt.Errorf("not run: %w", connErr)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = false
	s.duration = r.end.Sub(r.start)
	if err != nil {
		if msg := err.Error(); msg != s.lastErr || s.ok || !s.ran {
			logger.Warn("custom query failed", "target", r.target, "query", s.q.cfg.Name, "datname", s.datname, "err", msg)
		}
		s.failLocked(err)
		return
	}
	s.ran, s.ok, s.lastErr = true, true, ""
	s.metrics, s.dropped, s.readAt = r.metrics, r.dropped, r.end
	s.nextRun = r.end.Add(s.q.cfg.MinInterval)
}

// read turns the query's rows into metrics.
func (r *pgCustomRun) read(rows pgx.Rows) error {
	defer rows.Close()
	q := r.st.q
	fields := rows.FieldDescriptions()
	index := func(col string) (int, error) {
		for i, f := range fields {
			if f.Name == col {
				return i, nil
			}
		}
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.Name
		}
		return 0, fmt.Errorf("column %q is not in the result (columns: %s)", col, strings.Join(names, ", "))
	}
	// A statement the server refused (a write in the read-only
	// transaction) has no columns: its error is the one to report.
	columnErr := func(err error) error {
		rows.Close()
		if rerr := rows.Err(); rerr != nil {
			return rerr
		}
		return err
	}
	labelCols := make([]int, len(q.cfg.Labels))
	for i, l := range q.cfg.Labels {
		var err error
		if labelCols[i], err = index(l); err != nil {
			return columnErr(err)
		}
	}
	metricCols := make([]int, len(q.cfg.Metrics))
	for i, m := range q.cfg.Metrics {
		var err error
		if metricCols[i], err = index(m.Column); err != nil {
			return columnErr(err)
		}
		if !pgNumericOIDs[fields[metricCols[i]].DataTypeOID] {
			return fmt.Errorf("metric column %q is not a number, boolean or numeric (type OID %d); cast it in the query", m.Column, fields[metricCols[i]].DataTypeOID)
		}
	}
	seen := map[string]int{}
	row, kept := 0, 0
	for rows.Next() {
		row++
		if kept >= q.maxRows {
			r.dropped += len(q.descs)
			continue
		}
		kept++
		raw := rows.RawValues()
		labels := make([]string, 0, len(pgQueryLabels)+len(labelCols))
		labels = append(labels, r.target, r.st.datname)
		for _, i := range labelCols {
			labels = append(labels, string(raw[i]))
		}
		key := strings.Join(labels[2:], "\xff")
		if prev, ok := seen[key]; ok {
			return fmt.Errorf("rows %d and %d have the same label values %q: add a label column or aggregate", prev, row, labels[2:])
		}
		seen[key] = row
		for j, i := range metricCols {
			if raw[i] == nil {
				continue // NULL: no sample
			}
			v, err := pgParseNumber(raw[i])
			if err != nil {
				return fmt.Errorf("row %d, column %q: %w", row, q.cfg.Metrics[j].Column, err)
			}
			m, err := prometheus.NewConstMetric(q.descs[j], q.types[j], v, labels...)
			if err != nil {
				return fmt.Errorf("row %d: %w", row, err)
			}
			r.metrics = append(r.metrics, m)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	r.done = true
	return nil
}

// pgNumericOIDs are the result types a metric column may have: bool,
// int8, int2, int4, oid, float4, float8, numeric.
var pgNumericOIDs = map[uint32]bool{16: true, 20: true, 21: true, 23: true, 26: true, 700: true, 701: true, 1700: true}

// pgParseNumber parses a number or boolean in PostgreSQL's text format.
func pgParseNumber(b []byte) (float64, error) {
	switch string(b) {
	case "t":
		return 1, nil
	case "f":
		return 0, nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return 0, fmt.Errorf("not a number: %q", b)
	}
	return v, nil
}

// customQueries claims the custom queries of datname that are due and
// returns their statements for the scrape's pipeline. Their timeouts are
// the configured ones, cut in proportion so that together they take at
// most half the time the scrape has left.
func (c *Collector) customQueries(ctx context.Context, datname string, major int) ([]pgQuery, []*pgCustomRun) {
	states := c.custom[datname]
	if len(states) == 0 {
		return nil, nil
	}
	now := time.Now()
	var (
		runs     []*pgCustomRun
		timeouts []time.Duration
		sum      time.Duration
	)
	for _, s := range states {
		if !s.claim(now, major) {
			continue
		}
		runs = append(runs, &pgCustomRun{st: s, target: c.target})
		t := s.q.cfg.Timeout
		if t == 0 {
			t = c.cfg.StatementTimeout
		}
		timeouts = append(timeouts, t)
		sum += t
	}
	if dl, ok := ctx.Deadline(); ok && len(runs) > 0 {
		if budget := time.Until(dl) / 2; sum > budget {
			for i, t := range timeouts {
				timeouts[i] = time.Duration(float64(budget) * float64(t) / float64(sum))
			}
		}
	}
	closeRows := func(rows pgx.Rows) error {
		rows.Close()
		return rows.Err()
	}
	var queries []pgQuery
	for i, r := range runs {
		ms := strconv.AppendInt(nil, max(timeouts[i].Milliseconds(), 1), 10)
		queries = append(queries,
			pgQuery{custom: r, sql: pgBeginReadOnly, read: closeRows},
			pgQuery{custom: r, sql: pgLocalTimeout, args: [][]byte{ms}, read: func(rows pgx.Rows) error {
				r.start = time.Now()
				return closeRows(rows)
			}},
			pgQuery{custom: r, sql: r.st.q.cfg.SQL, textResults: true, read: r.read},
			pgQuery{custom: r, sql: pgRollback, read: func(rows pgx.Rows) error {
				r.end = time.Now()
				return closeRows(rows)
			}},
		)
	}
	return queries, runs
}

// finishCustom stores the outcome of runs after their pipeline.
func (c *Collector) finishCustom(runs []*pgCustomRun, connErr error) {
	for _, r := range runs {
		r.finish(connErr, c.logger)
	}
}

// collectCustom appends the custom queries' metrics for datname.
// notRun is the scrape's error when it did not get to run them (no
// connection); the ones that were due are then failed.
func (c *Collector) collectCustom(datname string, notRun error, out []prometheus.Metric) []prometheus.Metric {
	now := time.Now()
	for _, s := range c.custom[datname] {
		if notRun != nil {
			s.missed(now, notRun)
		}
		out = s.collect(c.target, now, out)
	}
	return out
}
