// Package report turns the operations runbook's routine checks (daily
// health check, weekly security review, monthly capacity review, monthly
// security report) into reports computed from Prometheus. Each report is
// data: sections of checks, each check one or more PromQL expressions and
// how to show the answer. Build runs the queries; Markdown and HTML render
// the result for a person to read.
//
// A check whose query returns nothing is never shown as 0: when a metric
// it reads has no series in the report's window the check says so ("no
// data (metric X not found)"); only when every metric exists is an empty
// answer a real "none" (no certificate expires, no alert fired).
package report

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// API is the part of the Prometheus HTTP API a report needs;
// v1.API satisfies it.
type API interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error)
	QueryRange(ctx context.Context, query string, r v1.Range, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error)
}

// Kind names a report.
type Kind string

// The reports, one per routine check of the runbook.
const (
	Daily    Kind = "daily"
	Weekly   Kind = "weekly"
	Monthly  Kind = "monthly"
	Security Kind = "security"
)

// Kinds lists every report, in the order the runbook has them.
var Kinds = []Kind{Daily, Weekly, Monthly, Security}

// CheckType says what a check's answer looks like.
type CheckType int

// The shapes of an answer.
const (
	// Stat is one number: an instant query returning one series (or a
	// scalar).
	Stat CheckType = iota
	// Table is one row per series of the first column's instant query;
	// further columns are joined on label values.
	Table
	// Chart is a range query over the report's window, one line per
	// series.
	Chart
)

// Column is one value column of a table.
type Column struct {
	Header string
	Query  string
	Unit   Unit
	// JoinOn are the labels that match this column's series to the
	// table's rows; empty means the table's Labels.
	JoinOn []string
}

// Order is how a table's rows are sorted.
type Order int

// Row orders; ties are broken by label values.
const (
	ByLabels Order = iota
	ByValueDesc
	ByValueAsc
)

// Check is one measurement of a report.
type Check struct {
	Type  CheckType
	Title string
	// Note explains how to read the answer (window, method); shown under
	// the title.
	Note string

	// Query and Unit: the expression of a Stat or Chart.
	Query string
	Unit  Unit

	// Labels are a Table's label columns and a Chart's legend labels.
	Labels  []string
	Columns []Column
	Order   Order

	// Step is a Chart's resolution (Options.ChartStep overrides it).
	Step time.Duration

	// Empty is shown when the query returns nothing although every metric
	// it reads has series in the window (for example "No certificate
	// expires within 30 days.").
	Empty string
	// AbsentMeansNone is set for metrics that only exist once something
	// happened (ALERTS, per-target counters): their absence is Empty, not
	// missing data, as long as Producer (a metric that always exists while
	// the producer is scraped) has series in the window.
	AbsentMeansNone bool
	Producer        string
}

// Queries returns every PromQL expression the check runs.
func (c Check) Queries() []string {
	if c.Type == Table {
		out := make([]string, 0, len(c.Columns))
		for _, col := range c.Columns {
			out = append(out, col.Query)
		}
		return out
	}
	return []string{c.Query}
}

// Section is a titled group of checks.
type Section struct {
	Title  string
	Intro  string
	Checks []Check
}

// Definition is a report before it runs.
type Definition struct {
	Kind  Kind
	Title string
	// Window is the period the report covers, ending at the report's time.
	Window   time.Duration
	Sections []Section
}

// Options adjust the queries to an installation.
type Options struct {
	// Namespace of auth-service and policy-service (default rust-security).
	Namespace string
	// QueryTimeout bounds each query (default 2 minutes).
	QueryTimeout time.Duration
	// ChartStep, when set, replaces every chart's step: for a history
	// minutes long (the demo's), where steps of 15 minutes would leave each
	// line a single point.
	ChartStep time.Duration
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "rust-security"
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 2 * time.Minute
	}
	return o
}

// Cell is one value of a table; OK is false when the column had no
// series for the row.
type Cell struct {
	Value float64
	OK    bool
}

// Row is one row of a table.
type Row struct {
	// Labels are the values of the table's label columns, in order.
	Labels []string
	Cells  []Cell
}

// Point is one sample of a chart series.
type Point struct {
	T time.Time
	V float64
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Points []Point
}

// Result is a check with its answer.
type Result struct {
	Check
	// Err is set when a query failed.
	Err string
	// Missing is set when the answer is empty because a metric the check
	// reads has no series at all in the window: "metric X not found".
	Missing string
	// Empty is true when the answer is empty and every metric exists.
	Empty bool
	// NoMatch is the selector that matched no series when Empty: its
	// metric exists, but not with those labels.
	NoMatch string
	// ColumnMissing says, per table column, why a column other than the
	// first has no value in any row ("" when it has values or when its
	// metrics exist).
	ColumnMissing []string

	Value  float64  // Stat
	Rows   []Row    // Table
	Series []Series // Chart
}

// Status is what the result shows instead of numbers, or "" when it has
// numbers.
func (r Result) Status() string {
	switch {
	case r.Err != "":
		return "query failed: " + r.Err
	case r.Missing != "":
		return "no data (" + r.Missing + ")"
	case r.Empty:
		text := "none"
		if r.Check.Empty != "" {
			text = r.Check.Empty
		}
		if r.NoMatch != "" {
			text += " (no series match " + r.NoMatch + ")"
		}
		return text
	}
	return ""
}

// SectionResult is a section with its answers.
type SectionResult struct {
	Title   string
	Intro   string
	Results []Result
}

// Report is a report after it ran.
type Report struct {
	Kind     Kind
	Title    string
	At       time.Time
	Window   time.Duration
	Sections []SectionResult
}

// Failed counts the checks whose queries failed.
func (r *Report) Failed() (failed, total int) {
	for _, s := range r.Sections {
		for _, res := range s.Results {
			total++
			if res.Err != "" {
				failed++
			}
		}
	}
	return failed, total
}

// Build runs every check of the report kind at the time at. A failed query
// is recorded in its check and the others still run; the returned error
// joins the failures.
func Build(ctx context.Context, api API, kind Kind, at time.Time, opts Options) (*Report, error) {
	def, err := Define(kind, opts)
	if err != nil {
		return nil, err
	}
	return Run(ctx, api, def, at, opts)
}

// Run runs the checks of a definition at the time at, as Build does.
func Run(ctx context.Context, api API, def Definition, at time.Time, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	q := &querier{api: api, at: at, window: def.Window, timeout: opts.QueryTimeout, chartStep: opts.ChartStep}
	rep := &Report{Kind: def.Kind, Title: def.Title, At: at, Window: def.Window}
	var (
		errs    []error
		stopped error // Prometheus unreachable: the remaining checks are not run
		skipped int
	)
	for _, s := range def.Sections {
		sr := SectionResult{Title: s.Title, Intro: s.Intro}
		for _, c := range s.Checks {
			if stopped != nil {
				sr.Results = append(sr.Results, Result{Check: c, Err: "not run: " + stopped.Error()})
				skipped++
				continue
			}
			res, err := q.run(ctx, c)
			if err != nil {
				res.Err = err.Error()
				errs = append(errs, fmt.Errorf("%s / %s: %w", s.Title, c.Title, err))
				if unreachable(ctx, err) {
					stopped = err
				}
			}
			sr.Results = append(sr.Results, res)
		}
		rep.Sections = append(rep.Sections, sr)
	}
	if skipped > 0 {
		errs = append(errs, fmt.Errorf("%d checks not run after the first failure to reach Prometheus", skipped))
	}
	return rep, errors.Join(errs...)
}

// unreachable tells a failure to reach Prometheus (connection refused,
// timeout, authentication refused, a proxy's error page), after which every
// further query would wait and fail the same way, from an error in one
// query (bad_data, execution), after which the others are still worth
// running.
func unreachable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	var apiErr *v1.Error
	if !errors.As(err, &apiErr) {
		return true
	}
	switch apiErr.Type {
	case v1.ErrClient, v1.ErrServer, v1.ErrBadResponse:
		return true
	}
	return false
}

type querier struct {
	api       API
	at        time.Time
	window    time.Duration
	timeout   time.Duration
	chartStep time.Duration // 0: each chart's own
}

func (q *querier) run(ctx context.Context, c Check) (Result, error) {
	res := Result{Check: c}
	switch c.Type {
	case Stat:
		vec, err := q.instant(ctx, c.Query)
		if err != nil {
			return res, err
		}
		switch len(vec) {
		case 0:
			return q.empty(ctx, res, c.Query)
		case 1:
			res.Value = float64(vec[0].Value)
		default:
			return res, fmt.Errorf("query %q returned %d series, want one", c.Query, len(vec))
		}
	case Table:
		if len(c.Columns) == 0 {
			return res, errors.New("table without columns")
		}
		first, err := q.instant(ctx, c.Columns[0].Query)
		if err != nil {
			return res, err
		}
		if len(first) == 0 {
			return q.empty(ctx, res, c.Columns[0].Query)
		}
		rows := make([]Row, len(first))
		rowLabels := make([]model.Metric, len(first))
		for i, s := range first {
			rows[i] = Row{Labels: labelValues(s.Metric, c.Labels), Cells: make([]Cell, len(c.Columns))}
			rows[i].Cells[0] = Cell{Value: float64(s.Value), OK: true}
			rowLabels[i] = s.Metric
		}
		for ci, col := range c.Columns[1:] {
			vec, err := q.instant(ctx, col.Query)
			if err != nil {
				return res, err
			}
			if len(vec) == 0 {
				metric, _, err := q.missing(ctx, col.Query)
				if err != nil {
					return res, err
				}
				if metric != "" {
					if res.ColumnMissing == nil {
						res.ColumnMissing = make([]string, len(c.Columns))
					}
					res.ColumnMissing[ci+1] = "metric " + metric + " not found"
				}
			}
			join := col.JoinOn
			if len(join) == 0 {
				join = c.Labels
			}
			byKey := map[string]float64{}
			for _, s := range vec {
				k := strings.Join(labelValues(s.Metric, join), "\xff")
				if _, dup := byKey[k]; !dup {
					byKey[k] = float64(s.Value)
				}
			}
			for i := range rows {
				if v, ok := byKey[strings.Join(labelValues(rowLabels[i], join), "\xff")]; ok {
					rows[i].Cells[ci+1] = Cell{Value: v, OK: true}
				}
			}
		}
		sortRows(rows, c.Order)
		res.Rows = rows
	case Chart:
		step := c.Step
		if step <= 0 {
			step = q.window / 100
		}
		if q.chartStep > 0 {
			step = q.chartStep
		}
		res.Step = step
		ctx, cancel := context.WithTimeout(ctx, q.timeout)
		defer cancel()
		val, _, _, err := q.api.QueryRange(ctx, c.Query, v1.Range{Start: q.at.Add(-q.window), End: q.at, Step: step}, v1.WithTimeout(q.timeout))
		if err != nil {
			return res, fmt.Errorf("query range %q: %w", c.Query, err)
		}
		m, ok := val.(model.Matrix)
		if !ok {
			return res, fmt.Errorf("query range %q: result type %s, want matrix", c.Query, val.Type())
		}
		if len(m) == 0 {
			return q.empty(ctx, res, c.Query)
		}
		for _, s := range m {
			name := strings.Join(labelValues(s.Metric, c.Labels), " ")
			if strings.TrimSpace(name) == "" {
				name = c.Title
			}
			ser := Series{Name: name}
			for _, p := range s.Values {
				ser.Points = append(ser.Points, Point{T: p.Timestamp.Time().UTC(), V: float64(p.Value)})
			}
			res.Series = append(res.Series, ser)
		}
		sort.SliceStable(res.Series, func(i, j int) bool { return res.Series[i].Name < res.Series[j].Name })
	default:
		return res, fmt.Errorf("unknown check type %d", c.Type)
	}
	return res, nil
}

// empty decides whether an empty answer is missing data or a real "none".
func (q *querier) empty(ctx context.Context, res Result, expr string) (Result, error) {
	probe := expr
	if res.AbsentMeansNone {
		if res.Producer == "" {
			res.Empty = true
			return res, nil
		}
		probe = res.Producer
	}
	metric, noMatch, err := q.missing(ctx, probe)
	if err != nil {
		return res, err
	}
	if metric != "" {
		res.Missing = "metric " + metric + " not found"
		return res, nil
	}
	res.Empty = true
	if !res.AbsentMeansNone {
		res.NoMatch = noMatch
	}
	return res, nil
}

// missing returns the first metric of expr that has no series at all in
// the report's window, else the first selector whose label matchers match
// no series in the window (the metric exists, but a service never answered
// with a 5xx, say), else "" and "".
func (q *querier) missing(ctx context.Context, expr string) (metric, noMatch string, err error) {
	sels, err := selectors(expr)
	if err != nil {
		return "", "", err
	}
	window := model.Duration(q.window).String()
	for _, s := range sels {
		vec, err := q.instant(ctx, fmt.Sprintf("count(last_over_time(%s[%s]))", s.name, window))
		if err != nil {
			return "", "", err
		}
		if len(vec) == 0 {
			return s.name, "", nil
		}
	}
	for _, s := range sels {
		if s.selector == s.name {
			continue
		}
		vec, err := q.instant(ctx, fmt.Sprintf("count(last_over_time(%s[%s]))", s.selector, window))
		if err != nil {
			return "", "", err
		}
		if len(vec) == 0 {
			return "", s.selector, nil
		}
	}
	return "", "", nil
}

func (q *querier) instant(ctx context.Context, expr string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	val, _, _, err := q.api.Query(ctx, expr, q.at, v1.WithTimeout(q.timeout))
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	switch v := val.(type) {
	case model.Vector:
		return v, nil
	case *model.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: v.Value, Timestamp: v.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, val.Type())
	}
}

type selector struct {
	name     string // metric name
	selector string // name and label matchers, without offset or @
}

// selectors returns the vector selectors of expr, in order of appearance,
// each once.
func selectors(expr string) ([]selector, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var (
		out  []selector
		seen = map[string]bool{}
	)
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		plain := &parser.VectorSelector{Name: vs.Name, LabelMatchers: vs.LabelMatchers}
		s := selector{name: vs.Name, selector: plain.String()}
		if s.name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					s.name = m.Value
				}
			}
		}
		if !seen[s.selector] {
			seen[s.selector] = true
			out = append(out, s)
		}
		return nil
	})
	return out, nil
}

func labelValues(m model.Metric, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = string(m[model.LabelName(n)])
	}
	return out
}

func sortRows(rows []Row, order Order) {
	byLabels := func(a, b Row) int {
		for i := range a.Labels {
			if c := strings.Compare(a.Labels[i], b.Labels[i]); c != 0 {
				return c
			}
		}
		return 0
	}
	value := func(r Row) float64 {
		v := r.Cells[0].Value
		if math.IsNaN(v) {
			return math.Inf(-1)
		}
		return v
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		switch order {
		case ByValueDesc:
			if value(a) != value(b) {
				return value(a) > value(b)
			}
		case ByValueAsc:
			if value(a) != value(b) {
				return value(a) < value(b)
			}
		}
		return byLabels(a, b) < 0
	})
}
