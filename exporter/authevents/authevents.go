// Package authevents turns auth-service's JSON log stream (files or pod
// logs) into bounded security metrics: login outcomes, event types, risk
// scores and a windowed top-K of failed-login sources; attack signals from
// fixed-size sketches of hashed usernames and sources (distinct users per
// source, brute force and spraying per source, credential stuffing, success
// after failures); plus single numbers read from the auth database.
package authevents

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/internal/kubecore"
	"github.com/warden-sre/warden/internal/logfollow"
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
	"account_locked",
	"mfa_failed",
	"password_reset_requested",
	"registration",
}

// authEventAliases are log event names auth-service deployments use for
// the canonical types beyond the identity; auth.events adds to them and
// overrides them.
var authEventAliases = map[string]string{
	"authentication_failure":  "authentication_failed",
	"login_failed":            "authentication_failed",
	"login_success":           "authentication_success",
	"account_lockout":         "account_locked",
	"user_locked":             "account_locked",
	"mfa_failure":             "mfa_failed",
	"mfa_verification_failed": "mfa_failed",
	"password_reset":          "password_reset_requested",
	"password_reset_request":  "password_reset_requested",
	"user_registered":         "registration",
	"user_registration":       "registration",
	"account_created":         "registration",
}

const (
	authEventAttempt = 0
	authEventSuccess = 1
	authEventFailed  = 2
	// authEventOther is the index of the "other" event label.
	authEventOther = 15
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
	authFilesMatchedDesc = authDesc("files_matched", "Files each glob of auth.files matched at the last poll; 0 when the glob matches no file.", "glob")

	authSourceUsersDesc = authDesc("source_distinct_users",
		"Estimated distinct usernames with failed logins in the sliding window, for the sources of warden_auth_failed_logins_by_source (source=\"other\": all the others together).", "source")
	authDistinctSourcesDesc = authDesc("distinct_sources", "Estimated distinct sources (addresses or networks) with failed logins in the sliding window.")
	authDistinctUsersDesc   = authDesc("distinct_users_failed", "Estimated distinct usernames with failed logins in the sliding window.")
	authAfterFailuresDesc   = authDesc("success_after_failures_total",
		"Successful logins that ended a run of at least success_after_failures failed logins, for the same username (kind=\"user\") or from the same source (kind=\"source\").", "kind")
	authRiskScoreDesc     = authDesc("risk_score", "Risk scores carried by auth-service's log lines.")
	authSourcePatternDesc = authDesc("source_pattern",
		"1 when a source of warden_auth_failed_logins_by_source shows the pattern over the sliding window: brute_force (many failures on few usernames) or spraying (many usernames, few tries each).", "source", "pattern")
	authStuffingDesc     = authDesc("credential_stuffing", "1 when the sliding window shows credential stuffing: failed logins from many sources for many usernames while few logins succeed.")
	authSuccessRatioDesc = authDesc("window_success_ratio", "Successful logins over successful and failed logins in the sliding window; absent without logins in the window.")
	authInvalidReasonIdx = func() map[string]int {
		m := map[string]int{}
		for i, r := range authInvalidReasons {
			m[r] = i
		}
		return m
	}()
)

// Collector turns auth-service's log stream into counters, a windowed
// top-K of failed-login sources and the attack signals. Followers feed it
// in the background; Collect only reads.
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
	signals      *attackSignals
	thresholds   Config // the signal thresholds of the configuration
	risk         riskHistogram

	queries []*authQuery
	pods    *logfollow.Pods
	// files follows cfg.Files (the globs), nil without files.
	files *logfollow.Files
	globs []string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// New builds the collector from a validated configuration and starts
// following its logs; client is used only when cfg.Kubernetes is set. The
// followers stop when ctx ends or the collector is closed.
func New(ctx context.Context, cfg *Config, client *kubecore.Client, logger *slog.Logger) (*Collector, error) {
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
		logger: logger,
		now:    time.Now,
		parser: authLineParser{eventKey: cfg.Fields.Event, ipKey: cfg.Fields.IPAddress, timestampKey: cfg.Fields.Timestamp,
			userKey: cfg.Fields.UserID, riskKey: cfg.Fields.RiskScore},
		events:     map[string]int{},
		ipv4Bits:   cfg.AggregateIPv4Prefix,
		ipv6Bits:   cfg.AggregateIPv6Prefix,
		window:     cfg.Window,
		failures:   topk.NewSliding(cfg.TopK, authTopKCapacityFactor*cfg.TopK, cfg.Window),
		thresholds: *cfg,
		risk:       newRiskHistogram(cfg.RiskScoreBuckets),
	}
	c.signals = newAttackSignals(authTopKCapacityFactor*cfg.TopK, c.failures.Slot(), cfg.SuccessAfterFailures)
	for i, name := range authEventTypes {
		c.events[name] = i
	}
	for name, typ := range authEventAliases {
		c.events[name] = slices.Index(authEventTypes[:], typ)
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
		c.files, c.globs = ff, cfg.Files
		c.wg.Go(func() { ff.Run(ctx) })
	}
	if c.pods != nil {
		c.wg.Go(func() { c.pods.Run(ctx) })
	}
}

// Name is "auth".
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
	if v, ok := authRiskScore(f.riskScore); ok {
		c.risk.observe(v)
	}
	if typ != authEventFailed && typ != authEventSuccess {
		return
	}
	source, valid := authSource(f.ipAddress, c.ipv4Bits, c.ipv6Bits) // zero Addr: unknown
	now := c.now()
	at, ok := authTimestamp(f.timestamp)
	if !ok {
		at = now
	}
	if typ == authEventFailed {
		c.signals.failure(c.failures, source, valid, f.userID, at, now)
	} else {
		c.signals.success(c.failures, source, valid, f.userID, at, now)
	}
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

// Collect sends the counters and the top failed-login sources, and
// refreshes the database queries that are due.
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

	c.risk.collect(ch)

	now := c.now()
	top, total := c.failures.Top(now)
	var reported uint64
	for _, sc := range top {
		gauge(authBySourceDesc, float64(sc.Count), c.sourceLabel(sc.Key))
		reported += sc.Count
	}
	gauge(authBySourceDesc, float64(total-reported), authOther)
	gauge(authWindowDesc, c.window.Seconds())
	c.collectSignals(ch, top, total-reported, now)
	if c.files != nil {
		for i, n := range c.files.Matched() {
			gauge(authFilesMatchedDesc, float64(n), c.globs[i])
		}
	}

	// Queries refresh concurrently, each bounded by its timeout and all by
	// the scrape deadline.
	var (
		errs []error
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
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
