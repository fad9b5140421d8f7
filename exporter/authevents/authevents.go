// Package authevents turns auth-service's JSON log stream (files or pod
// logs) into bounded security metrics: login outcomes, event types and a
// windowed top-K of failed-login sources, plus single numbers read from the
// auth database.
package authevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/internal/logfollow"
	"github.com/warden-sre/warden/internal/secret"
	"github.com/warden-sre/warden/internal/topk"
)

// The canonical auth-service event types (the auth-service contract). Log
// event names are mapped onto these; anything else counts as "other".
var authEventTypes = [authEventOther]string{
	"authentication_attempt",
	"authentication_success",
	"authentication_failed",
	"invalid_token",
	"jwt_validation_error",
	"unauthorized",
	"ip_blocked",
	"unusual_access_pattern",
	"admin_action",
	"privilege_escalation",
	"configuration_change",
}

const (
	authEventAttempt = 0
	authEventSuccess = 1
	authEventFailed  = 2
	// authEventOther is the index of the "other" event label.
	authEventOther = 11
	authOther      = "other"
	// authUnknownSource labels failed logins whose source address is missing
	// or not an IP address.
	authUnknownSource = "unknown"
)

const (
	authDefaultTopK          = 20
	authMaxTopK              = 1000
	authDefaultWindow        = 10 * time.Minute
	authDefaultMaxLineBytes  = 64 << 10
	authDefaultPollInterval  = 250 * time.Millisecond
	authDefaultPodPoll       = 10 * time.Second
	authDefaultNamespace     = "rust-security"
	authDefaultLabelSelector = "app=auth-service"
	authDefaultQueryTimeout  = 5 * time.Second
	authDefaultQueryInterval = 30 * time.Second
	// authTopKCapacityFactor: counters kept per sub-window per reported
	// source. Ten times K keeps every source above a tenth of 1/K of the
	// failures, and costs about 80 bytes per counter.
	authTopKCapacityFactor = 10
)

// AuthConfig configures the auth collector: where auth-service's JSON log
// lines come from and how they are read.
type Config struct {
	// Files are paths or globs of log files to follow.
	Files []string `yaml:"files"`
	// FromBeginning reads files (and pods) present at start from their
	// start instead of their end.
	FromBeginning bool `yaml:"from_beginning"`
	// PollInterval is how often files are checked for new lines.
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxLineBytes bounds a line; longer lines are dropped and counted.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// Kubernetes follows the logs of pods chosen by label selector.
	Kubernetes *KubernetesConfig `yaml:"kubernetes"`
	// Fields names the JSON fields to read.
	Fields FieldsConfig `yaml:"fields"`
	// Events maps log event names to canonical event types, on top of the
	// identity mapping of the canonical names.
	Events map[string]string `yaml:"events"`
	// TopK is the number of sources reported by failed logins.
	TopK int `yaml:"top_k"`
	// Window is the sliding window of the failed-logins-by-source gauge.
	Window time.Duration `yaml:"window"`
	// AggregateIPv4Prefix / AggregateIPv6Prefix group sources by network
	// (e.g. 24 and 64); 0 keeps single addresses.
	AggregateIPv4Prefix int `yaml:"aggregate_ipv4_prefix"`
	AggregateIPv6Prefix int `yaml:"aggregate_ipv6_prefix"`
	// Queries read single numbers from the auth database.
	Queries []QueryConfig `yaml:"queries"`
}

// AuthKubernetesConfig chooses the pods whose logs are followed.
type KubernetesConfig struct {
	Namespace     string `yaml:"namespace"`
	LabelSelector string `yaml:"label_selector"`
	// Container is the container whose log is read; empty means the pod's
	// first container.
	Container string `yaml:"container"`
	// PollInterval is how often the pod list is refreshed.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// AuthFieldsConfig names the JSON fields of a log line.
type FieldsConfig struct {
	Event     string `yaml:"event"`
	IPAddress string `yaml:"ip_address"`
	Timestamp string `yaml:"timestamp"`
}

// AuthQueryConfig is one SQL query returning a single number.
type QueryConfig struct {
	Name        string        `yaml:"name"`
	DSN         string        `yaml:"dsn"`
	Password    secret.Secret `yaml:"password"`
	SQL         string        `yaml:"sql"`
	Timeout     time.Duration `yaml:"timeout"`
	MinInterval time.Duration `yaml:"min_interval"`
}

// UnmarshalYAML applies defaults before decoding, through the decoder's own
// unmarshal function so that strict decoding still applies.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Config
	p := plain(defaultAuthConfig())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = Config(p)
	return nil
}

// UnmarshalYAML applies defaults before decoding.
func (c *KubernetesConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain KubernetesConfig
	p := plain{Namespace: authDefaultNamespace, LabelSelector: authDefaultLabelSelector, PollInterval: authDefaultPodPoll}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = KubernetesConfig(p)
	return nil
}

// UnmarshalYAML applies defaults before decoding.
func (c *QueryConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain QueryConfig
	p := plain{Timeout: authDefaultQueryTimeout, MinInterval: authDefaultQueryInterval}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = QueryConfig(p)
	return nil
}

func defaultAuthConfig() Config {
	return Config{
		PollInterval: authDefaultPollInterval,
		MaxLineBytes: authDefaultMaxLineBytes,
		Fields:       FieldsConfig{Event: "event", IPAddress: "ip_address", Timestamp: "timestamp"},
		TopK:         authDefaultTopK,
		Window:       authDefaultWindow,
	}
}

var authQueryName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate checks a configuration decoded from YAML (defaults applied);
// errors name the field under path.
func (c *Config) Validate(path string) error {
	if len(c.Files) == 0 && c.Kubernetes == nil {
		return fmt.Errorf("%s: set files or kubernetes (or both)", path)
	}
	for i, g := range c.Files {
		if g == "" {
			return fmt.Errorf("%s.files[%d]: empty path", path, i)
		}
		if _, err := filepath.Match(g, ""); err != nil {
			return fmt.Errorf("%s.files[%d]: invalid glob %q: %w", path, i, g, err)
		}
	}
	if c.PollInterval < 10*time.Millisecond || c.PollInterval > time.Minute {
		return fmt.Errorf("%s.poll_interval: must be between 10ms and 1m", path)
	}
	if c.MaxLineBytes < 256 || c.MaxLineBytes > 16<<20 {
		return fmt.Errorf("%s.max_line_bytes: must be between 256 and 16777216", path)
	}
	if k := c.Kubernetes; k != nil {
		if k.Namespace == "" {
			return fmt.Errorf("%s.kubernetes.namespace: required", path)
		}
		if _, err := labels.Parse(k.LabelSelector); err != nil {
			return fmt.Errorf("%s.kubernetes.label_selector: %w", path, err)
		}
		if k.LabelSelector == "" {
			return fmt.Errorf("%s.kubernetes.label_selector: required (following every pod of the namespace is never intended)", path)
		}
		if k.PollInterval < time.Second {
			return fmt.Errorf("%s.kubernetes.poll_interval: must be at least 1s", path)
		}
	}
	f := c.Fields
	for name, v := range map[string]string{"event": f.Event, "ip_address": f.IPAddress, "timestamp": f.Timestamp} {
		if v == "" {
			return fmt.Errorf("%s.fields.%s: must not be empty", path, name)
		}
	}
	if f.Event == f.IPAddress || f.Event == f.Timestamp || f.IPAddress == f.Timestamp {
		return fmt.Errorf("%s.fields: event, ip_address and timestamp must name different fields", path)
	}
	for name, typ := range c.Events {
		if name == "" {
			return fmt.Errorf("%s.events: empty event name", path)
		}
		if typ != authOther && !slices.Contains(authEventTypes[:], typ) {
			return fmt.Errorf("%s.events[%q]: %q is not an event type (one of %v or %q)", path, name, typ, authEventTypes, authOther)
		}
	}
	if c.TopK < 1 || c.TopK > authMaxTopK {
		return fmt.Errorf("%s.top_k: must be between 1 and %d", path, authMaxTopK)
	}
	if c.Window < 10*time.Second || c.Window > 24*time.Hour {
		return fmt.Errorf("%s.window: must be between 10s and 24h", path)
	}
	if c.AggregateIPv4Prefix < 0 || c.AggregateIPv4Prefix > 32 {
		return fmt.Errorf("%s.aggregate_ipv4_prefix: must be between 0 (off) and 32", path)
	}
	if c.AggregateIPv6Prefix < 0 || c.AggregateIPv6Prefix > 128 {
		return fmt.Errorf("%s.aggregate_ipv6_prefix: must be between 0 (off) and 128", path)
	}
	seen := map[string]bool{}
	for i := range c.Queries {
		q := &c.Queries[i]
		qp := fmt.Sprintf("%s.queries[%d]", path, i)
		if !authQueryName.MatchString(q.Name) {
			return fmt.Errorf("%s.name: must match %s", qp, authQueryName)
		}
		if seen[q.Name] {
			return fmt.Errorf("%s.name: %q is already used", qp, q.Name)
		}
		seen[q.Name] = true
		if q.DSN == "" {
			return fmt.Errorf("%s.dsn: required", qp)
		}
		if _, err := postgres.ParseDSN(q.DSN); err != nil {
			return fmt.Errorf("%s.dsn: %w", qp, err)
		}
		if err := q.Password.Validate(); err != nil {
			return fmt.Errorf("%s.password: %w", qp, err)
		}
		if q.SQL == "" {
			return fmt.Errorf("%s.sql: required", qp)
		}
		if q.Timeout <= 0 || q.Timeout > time.Minute {
			return fmt.Errorf("%s.timeout: must be between 1ns and 1m", qp)
		}
		if q.MinInterval < 0 {
			return fmt.Errorf("%s.min_interval: must not be negative", qp)
		}
	}
	return nil
}

func authDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("warden_auth_"+name, help, labels, nil)
}

var (
	authAttemptsDesc  = authDesc("login_attempts_total", "Login attempts (authentication_attempt events) read from auth-service's logs.")
	authSuccessesDesc = authDesc("login_successes_total", "Successful logins (authentication_success events) read from auth-service's logs.")
	authFailuresDesc  = authDesc("login_failures_total", "Failed logins (authentication_failed events) read from auth-service's logs.")
	authEventsDesc    = authDesc("events_total", "auth-service log events by event type; unknown events count as other.", "event")
	authBySourceDesc  = authDesc("failed_logins_by_source",
		"Failed logins in the sliding window for the top sources (address or network), with the rest as source=\"other\".", "source")
	authWindowDesc       = authDesc("failed_logins_window_seconds", "Length of the sliding window of warden_auth_failed_logins_by_source.")
	authLinesDesc        = authDesc("log_lines_total", "Log lines read from auth-service's logs, valid or not.")
	authInvalidDesc      = authDesc("log_lines_invalid_total", "Log lines skipped, by reason.", "reason")
	authQueryValueDesc   = authDesc("query_value", "Value returned by a configured auth database query (cached between refreshes).", "query")
	authQueryAgeDesc     = authDesc("query_age_seconds", "Seconds since the value of warden_auth_query_value was read from the database.", "query")
	authInvalidReasonIdx = func() map[string]int {
		m := map[string]int{}
		for i, r := range authInvalidReasons {
			m[r] = i
		}
		return m
	}()
)

// Collector turns auth-service's log stream into counters and a
// windowed top-K of failed-login sources. Followers feed it in the
// background; Collect only reads.
type Collector struct {
	logger *slog.Logger
	now    func() time.Time

	parser       authLineParser
	events       map[string]int // log event name → index in authEventTypes
	ipv4Bits     int
	ipv6Bits     int
	window       time.Duration
	eventCounts  [authEventOther + 1]atomic.Uint64
	lines        atomic.Uint64
	invalidLines [len(authInvalidReasons)]atomic.Uint64
	failures     *topk.Sliding

	queries []*authQuery
	pods    *logfollow.Pods

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// New builds the collector from a validated configuration and starts
// following its logs; client is used only when cfg.Kubernetes is set. The
// followers stop when ctx ends or the collector is closed.
func New(ctx context.Context, cfg *Config, client kubernetes.Interface, logger *slog.Logger) (*Collector, error) {
	c, err := newCollector(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	if cfg.Kubernetes != nil {
		c.pods = logfollow.NewPods(client, logfollow.PodOptions{
			Namespace:     cfg.Kubernetes.Namespace,
			LabelSelector: cfg.Kubernetes.LabelSelector,
			Container:     cfg.Kubernetes.Container,
			FromBeginning: cfg.FromBeginning,
			PollInterval:  cfg.Kubernetes.PollInterval,
			MaxLineBytes:  cfg.MaxLineBytes,
		}, c, logger)
	}
	c.start(ctx, cfg)
	return c, nil
}

// newCollector builds the collector without starting followers.
func newCollector(ctx context.Context, cfg *Config, logger *slog.Logger) (*Collector, error) {
	c := &Collector{
		logger:   logger,
		now:      time.Now,
		parser:   authLineParser{eventKey: cfg.Fields.Event, ipKey: cfg.Fields.IPAddress, timestampKey: cfg.Fields.Timestamp},
		events:   map[string]int{},
		ipv4Bits: cfg.AggregateIPv4Prefix,
		ipv6Bits: cfg.AggregateIPv6Prefix,
		window:   cfg.Window,
		failures: topk.NewSliding(cfg.TopK, authTopKCapacityFactor*cfg.TopK, cfg.Window),
	}
	for i, name := range authEventTypes {
		c.events[name] = i
	}
	for name, typ := range cfg.Events {
		if i := slices.Index(authEventTypes[:], typ); i >= 0 {
			c.events[name] = i
		} else {
			c.events[name] = authEventOther
		}
	}
	for _, qc := range cfg.Queries {
		q, err := newAuthQuery(ctx, qc)
		if err != nil {
			c.closeQueries()
			return nil, err
		}
		c.queries = append(c.queries, q)
	}
	return c, nil
}

func (c *Collector) start(ctx context.Context, cfg *Config) {
	ctx, c.cancel = context.WithCancel(ctx)
	if len(cfg.Files) > 0 {
		ff := logfollow.NewFiles(logfollow.FileOptions{
			Globs:         cfg.Files,
			FromBeginning: cfg.FromBeginning,
			MaxLineBytes:  cfg.MaxLineBytes,
			PollInterval:  cfg.PollInterval,
		}, c, c.logger)
		c.wg.Go(func() { ff.Run(ctx) })
	}
	if c.pods != nil {
		c.wg.Go(func() { c.pods.Run(ctx) })
	}
}

func (c *Collector) Name() string { return "auth" }

// Close stops the followers and closes database pools.
func (c *Collector) Close() error {
	c.closed.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		c.closeQueries()
	})
	return nil
}

func (c *Collector) closeQueries() {
	for _, q := range c.queries {
		q.pool.Close()
	}
}

// Line ingests one log line (logfollow.Sink).
func (c *Collector) Line(b []byte) {
	c.lines.Add(1)
	var f authLineFields
	if err := c.parser.parse(b, &f); err != nil {
		reason := invalidNotJSON
		if le, ok := err.(*authLineError); ok {
			reason = le.Reason
		}
		c.invalidLines[authInvalidReasonIdx[reason]].Add(1)
		return
	}
	typ, ok := c.events[string(f.event.val)]
	if !ok {
		typ = authEventOther
	}
	c.eventCounts[typ].Add(1)
	if typ != authEventFailed {
		return
	}
	source, _ := authSource(f.ipAddress, c.ipv4Bits, c.ipv6Bits) // zero Addr: unknown
	now := c.now()
	at, ok := authTimestamp(f.timestamp)
	if !ok {
		at = now
	}
	c.failures.Add(source, at, now)
}

// TooLong counts a line the follower dropped for its length
// (logfollow.Sink).
func (c *Collector) TooLong() {
	c.lines.Add(1)
	c.invalidLines[authInvalidReasonIdx[invalidTooLong]].Add(1)
}

func (c *Collector) sourceLabel(a netip.Addr) string {
	if !a.IsValid() {
		return authUnknownSource
	}
	bits := c.ipv6Bits
	if a.Is4() {
		bits = c.ipv4Bits
	}
	if bits > 0 && bits < a.BitLen() {
		return netip.PrefixFrom(a, bits).String()
	}
	return a.String()
}

func (c *Collector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter(authAttemptsDesc, c.eventCounts[authEventAttempt].Load())
	counter(authSuccessesDesc, c.eventCounts[authEventSuccess].Load())
	counter(authFailuresDesc, c.eventCounts[authEventFailed].Load())
	for i, name := range authEventTypes {
		counter(authEventsDesc, c.eventCounts[i].Load(), name)
	}
	counter(authEventsDesc, c.eventCounts[authEventOther].Load(), authOther)
	counter(authLinesDesc, c.lines.Load())
	for i, reason := range authInvalidReasons {
		counter(authInvalidDesc, c.invalidLines[i].Load(), reason)
	}

	top, total := c.failures.Top(c.now())
	var reported uint64
	for _, sc := range top {
		gauge(authBySourceDesc, float64(sc.Count), c.sourceLabel(sc.Key))
		reported += sc.Count
	}
	gauge(authBySourceDesc, float64(total-reported), authOther)
	gauge(authWindowDesc, c.window.Seconds())

	// Queries refresh concurrently, each bounded by its timeout and all by
	// the scrape deadline.
	var (
		errs []error
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	now := c.now()
	for _, q := range c.queries {
		wg.Go(func() {
			if err := q.collect(ctx, now, ch); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if c.pods != nil {
		if err := c.pods.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

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
	if qc.Password.IsSet() {
		pw, err := qc.Password.Value()
		if err != nil {
			return nil, fmt.Errorf("auth.queries %s: password: %w", qc.Name, err)
		}
		pc.ConnConfig.Password = pw
	}
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
