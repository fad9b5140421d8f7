package authevents

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/exporter/postgres"
)

// authQuery is one configured query with its cached value.
type authQuery struct {
	cfg  QueryConfig
	pool *pgxpool.Pool

	// refreshing is held by the scrape refreshing the value; other scrapes
	// serve the cached value instead of waiting.
	refreshing sync.Mutex

	mu          sync.Mutex
	value       float64
	updated     time.Time // when value was read; zero: never
	lastAttempt time.Time
	lastErr     error
}

func newAuthQuery(ctx context.Context, qc QueryConfig) (*authQuery, error) {
	pc, err := postgres.ParseDSN(qc.DSN)
	if err != nil {
		return nil, fmt.Errorf("auth.queries %s: %w", qc.Name, err)
	}
	// The password was read once by validation; the pool reads it again
	// for every new connection (see postgres.UsePassword).
	postgres.UsePassword(pc, qc.Password)
	// One query, refreshed at most once at a time: one connection is all
	// it ever needs, and the exporter must not crowd the auth database.
	pc.MaxConns = 1
	pc.MinConns = 0
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > qc.Timeout {
		pc.ConnConfig.ConnectTimeout = qc.Timeout
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "warden-exporter"
	pool, err := pgxpool.NewWithConfig(ctx, pc) // MinConns 0: connects at the first query
	if err != nil {
		return nil, fmt.Errorf("auth.queries %s: %w", qc.Name, err)
	}
	return &authQuery{cfg: qc, pool: pool}, nil
}

// collect refreshes the value when it is older than min_interval (at most
// for timeout, never past ctx's deadline) and sends the cached value and
// its age. It returns the last refresh error.
func (q *authQuery) collect(ctx context.Context, now time.Time, ch chan<- prometheus.Metric) error {
	q.mu.Lock()
	due := q.lastAttempt.IsZero() || now.Sub(q.lastAttempt) >= q.cfg.MinInterval
	q.mu.Unlock()
	if due && q.refreshing.TryLock() {
		qctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
		v, err := q.run(qctx)
		cancel()
		q.mu.Lock()
		q.lastAttempt = now
		q.lastErr = err
		if err == nil {
			q.value, q.updated = v, now
		}
		q.mu.Unlock()
		q.refreshing.Unlock()
	}
	q.mu.Lock()
	value, updated, err := q.value, q.updated, q.lastErr
	q.mu.Unlock()
	if !updated.IsZero() {
		ch <- prometheus.MustNewConstMetric(authQueryValueDesc, prometheus.GaugeValue, value, q.cfg.Name)
		ch <- prometheus.MustNewConstMetric(authQueryAgeDesc, prometheus.GaugeValue, max(0, now.Sub(updated).Seconds()), q.cfg.Name)
	}
	if err != nil {
		return fmt.Errorf("auth query %s: %w", q.cfg.Name, err)
	}
	return nil
}

// run executes the query, which must return one row with one numeric
// (or boolean) column.
func (q *authQuery) run(ctx context.Context) (float64, error) {
	rows, err := q.pool.Query(ctx, q.cfg.SQL)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	if n := len(rows.FieldDescriptions()); n != 1 {
		return 0, fmt.Errorf("query returns %d columns, want 1", n)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, errors.New("query returned no row")
	}
	vals, err := rows.Values()
	if err != nil {
		return 0, err
	}
	if rows.Next() {
		return 0, errors.New("query returned more than one row")
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return authNumber(vals[0])
}

func authNumber(v any) (float64, error) {
	switch v := v.(type) {
	case int64:
		return float64(v), nil
	case int32:
		return float64(v), nil
	case int16:
		return float64(v), nil
	case float64:
		return v, nil
	case float32:
		return float64(v), nil
	case bool:
		if v {
			return 1, nil
		}
		return 0, nil
	case pgtype.Numeric:
		f, err := v.Float64Value()
		if err != nil || !f.Valid {
			return 0, fmt.Errorf("numeric value not representable: %v", err)
		}
		return f.Float64, nil
	case nil:
		return 0, errors.New("query returned NULL")
	}
	return 0, fmt.Errorf("query returned a %T, want a number", v)
}
