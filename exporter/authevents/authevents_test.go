package authevents

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/authsim"
	"github.com/warden-sre/warden/internal/testenv"
)

func authTestConfig(t *testing.T, yml string) *Config {
	t.Helper()
	cfg, err := parseConfig(yml)
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return cfg
}

// parseConfig decodes a configuration file's auth section and validates it
// as the exporter does.
func parseConfig(yml string) (*Config, error) {
	var file struct {
		Auth *Config `yaml:"auth"`
	}
	if err := exportertest.DecodeStrict(yml, &file); err != nil {
		return nil, err
	}
	if err := file.Auth.Validate("auth"); err != nil {
		return nil, err
	}
	return file.Auth, nil
}

func TestAuthConfigDefaults(t *testing.T) {
	cfg := authTestConfig(t, "auth:\n  files: [/var/log/auth/*.log]\n  kubernetes: {}\n  queries:\n  - {name: active_sessions, dsn: 'postgres://u@127.0.0.1/auth', sql: select 1}\n")
	want := defaultAuthConfig()
	if cfg.TopK != want.TopK || cfg.Window != want.Window || cfg.Fields != want.Fields ||
		cfg.MaxLineBytes != want.MaxLineBytes || cfg.PollInterval != want.PollInterval || cfg.FromBeginning ||
		cfg.SuccessAfterFailures != 5 || cfg.SprayingMinUsers != 20 || cfg.SprayingMaxFailuresPerUser != 3 ||
		cfg.BruteForceMinFailures != 20 || cfg.BruteForceMaxUsers != 3 || cfg.PatternMinFailureRatio != 0.5 ||
		cfg.StuffingMinSources != 500 || cfg.StuffingMinUsers != 2000 || cfg.StuffingMaxSuccessRatio != 0.5 ||
		len(cfg.RiskScoreBuckets) != 10 {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	k := cfg.Kubernetes
	if k.Namespace != "rust-security" || k.LabelSelector != "app=auth-service" || k.PollInterval != authDefaultPodPoll {
		t.Errorf("kubernetes defaults not applied: %+v", k)
	}
	if q := cfg.Queries[0]; q.Timeout != authDefaultQueryTimeout || q.MinInterval != authDefaultQueryInterval {
		t.Errorf("query defaults not applied: %+v", q)
	}
	partial := authTestConfig(t, "auth:\n  files: [a.log]\n  fields: {event: type}\n")
	if partial.Fields != (FieldsConfig{Event: "type", IPAddress: "ip_address", Timestamp: "timestamp", UserID: "user_id", RiskScore: "risk_score"}) {
		t.Errorf("partial fields = %+v", partial.Fields)
	}
}

func TestAuthConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		yml  string
		want string
	}{
		{"auth: {}", "auth: set files or kubernetes"},
		{"auth: {files: ['a[']}", "auth.files[0]: invalid glob"},
		{"auth: {files: [a], unknown: 1}", "field unknown not found"},
		{"auth: {files: [a], top_k: 0}", "auth.top_k: must be between 1 and 1000"},
		{"auth: {files: [a], top_k: 5000}", "auth.top_k"},
		{"auth: {files: [a], window: 1s}", "auth.window"},
		{"auth: {files: [a], aggregate_ipv4_prefix: 33}", "auth.aggregate_ipv4_prefix"},
		{"auth: {files: [a], aggregate_ipv6_prefix: -1}", "auth.aggregate_ipv6_prefix"},
		{"auth: {files: [a], max_line_bytes: 10}", "auth.max_line_bytes"},
		{"auth: {files: [a], fields: {event: ''}}", "auth.fields.event: must not be empty"},
		{"auth: {files: [a], fields: {event: ip_address}}", `auth.fields.ip_address: names the same field "ip_address" as fields.event`},
		{"auth: {files: [a], fields: {risk_score: user_id}}", `auth.fields.risk_score: names the same field "user_id" as fields.user_id`},
		{"auth: {files: [a], fields: {user_id: ''}}", "auth.fields.user_id: must not be empty"},
		{"auth: {files: [a], success_after_failures: 0}", "auth.success_after_failures: must be between 1 and"},
		{"auth: {files: [a], brute_force_min_failures: -1}", "auth.brute_force_min_failures"},
		{"auth: {files: [a], brute_force_max_users: 30}", "auth.brute_force_max_users: must be less than spraying_min_users (20), got 30"},
		{"auth: {files: [a], spraying_min_users: 1}", "auth.spraying_min_users: must be between 2 and"},
		{"auth: {files: [a], spraying_max_failures_per_user: 0.5}", "auth.spraying_max_failures_per_user: must be between 1 and 1000"},
		{"auth: {files: [a], pattern_min_failure_ratio: 1.5}", "auth.pattern_min_failure_ratio: must be between 0 and 1"},
		{"auth: {files: [a], stuffing_min_sources: 0}", "auth.stuffing_min_sources"},
		{"auth: {files: [a], stuffing_min_users: 1}", "auth.stuffing_min_users"},
		{"auth: {files: [a], stuffing_max_success_ratio: -0.1}", "auth.stuffing_max_success_ratio: must be between 0 and 1"},
		{"auth: {files: [a], risk_score_buckets: []}", "auth.risk_score_buckets: must have between 1 and 100 bounds"},
		{"auth: {files: [a], risk_score_buckets: [0.5, 0.2]}", "auth.risk_score_buckets[1]: bounds must increase"},
		{"auth: {files: [a], risk_score_buckets: [.nan]}", "auth.risk_score_buckets[0]: must be a finite number"},
		{"auth: {files: [a], events: {login_failed: login_failure}}", `auth.events["login_failed"]: "login_failure" is not an event type`},
		{"auth: {kubernetes: {label_selector: 'app in ('}}", "auth.kubernetes.label_selector"},
		{"auth: {kubernetes: {label_selector: ''}}", "auth.kubernetes.label_selector: required"},
		{"auth: {kubernetes: {namespace: ''}}", "auth.kubernetes.namespace: required"},
		{"auth: {kubernetes: {bogus: 1}}", "field bogus not found"},
		{"auth: {files: [a], queries: [{name: 'bad name', dsn: 'postgres://x', sql: select 1}]}", "auth.queries[0].name"},
		{"auth: {files: [a], queries: [{name: q, sql: select 1}]}", "auth.queries[0].dsn: required"},
		{"auth: {files: [a], queries: [{name: q, dsn: 'postgres://u:s3cret@h:notaport/db', sql: select 1}]}", "auth.queries[0].dsn: invalid DSN"},
		{"auth: {files: [a], queries: [{name: q, dsn: 'postgres://x'}]}", "auth.queries[0].sql: required"},
		{"auth: {files: [a], queries: [{name: q, dsn: 'postgres://x', sql: select 1, timeout: 0s}]}", "auth.queries[0].timeout"},
		{"auth: {files: [a], queries: [{name: q, dsn: 'postgres://x', sql: select 1, password: {env: WARDEN_AUTH_TEST_UNSET}}]}", "auth.queries[0].password: environment variable"},
		{"auth: {files: [a], queries: [{name: q, dsn: 'postgres://x', sql: s}, {name: q, dsn: 'postgres://x', sql: s}]}", `auth.queries[1].name: "q" is already used`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := parseConfig(tt.yml)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parse %s error = %v, want it to contain %q", tt.yml, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

// waitAuthLines waits until the collector has read n lines.
func waitAuthLines(t *testing.T, c *Collector, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.lines.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d lines, want %d", c.lines.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeLog creates the log file at path with the given lines.
func writeLog(t *testing.T, path, lines string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
}

func authJSONLine(event, ip string) string {
	return fmt.Sprintf(`{"timestamp":%q,"level":"info","event":%q,"ip_address":%q,"user_id":"u-1","action":"login","resource":"/api/v1/auth/login","risk_score":0.1}`+"\n",
		time.Now().UTC().Format(time.RFC3339Nano), event, ip)
}

// TestAuthCollectorFollowsFilesIntoMetrics runs the collector on real files
// (with a rotation in the middle) and checks the exposition exactly, then
// lints it with promtool.
func TestAuthCollectorFollowsFilesIntoMetrics(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	cfg := authTestConfig(t, fmt.Sprintf(`
auth:
  files: [%q]
  from_beginning: true
  poll_interval: 10ms
  max_line_bytes: 400
  top_k: 2
  aggregate_ipv4_prefix: 24
  events:
    login_failure: authentication_failed
    debug_noise: other
`, filepath.Join(dir, "*.log")))
	c, err := New(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	var b strings.Builder
	for range 2 {
		b.WriteString(authJSONLine("authentication_attempt", "203.0.113.7"))
	}
	b.WriteString(authJSONLine("authentication_success", "198.51.100.1"))
	for range 4 {
		b.WriteString(authJSONLine("authentication_failed", "203.0.113.7"))
	}
	b.WriteString(authJSONLine("login_failure", "203.0.113.99")) // same /24
	b.WriteString(authJSONLine("authentication_failed", "198.51.100.20"))
	b.WriteString(authJSONLine("authentication_failed", "198.51.100.21"))
	b.WriteString(authJSONLine("authentication_failed", "2001:db8::1"))
	b.WriteString(authJSONLine("authentication_failed", "not-an-ip"))
	b.WriteString(authJSONLine("something_new", "203.0.113.7"))
	b.WriteString(authJSONLine("debug_noise", "203.0.113.7"))
	b.WriteString("this is not json\n")
	b.WriteString(`{"level":"info","message":"no event field"}` + "\n")
	b.WriteString(`{"event":42}` + "\n")
	b.WriteString(`{"event":"admin_action","pad":"` + strings.Repeat("x", 500) + "\"}\n")
	writeLog(t, path, b.String())
	waitAuthLines(t, c, 18)

	// Rotation: rename, then a new file with more lines.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, authJSONLine("privilege_escalation", "203.0.113.7")+authJSONLine("authentication_failed", "203.0.113.8"))
	waitAuthLines(t, c, 20)

	pc := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
	want := `
# HELP warden_auth_credential_stuffing 1 when the sliding window shows credential stuffing: failed logins from many sources for many usernames while few logins succeed.
# TYPE warden_auth_credential_stuffing gauge
warden_auth_credential_stuffing 0
# HELP warden_auth_distinct_sources Estimated distinct sources (addresses or networks) with failed logins in the sliding window.
# TYPE warden_auth_distinct_sources gauge
warden_auth_distinct_sources 3
# HELP warden_auth_distinct_users_failed Estimated distinct usernames with failed logins in the sliding window.
# TYPE warden_auth_distinct_users_failed gauge
warden_auth_distinct_users_failed 1
# HELP warden_auth_events_total auth-service log events by event type; unknown events count as other.
# TYPE warden_auth_events_total counter
warden_auth_events_total{event="account_locked"} 0
warden_auth_events_total{event="admin_action"} 0
warden_auth_events_total{event="authentication_attempt"} 2
warden_auth_events_total{event="authentication_failed"} 10
warden_auth_events_total{event="authentication_success"} 1
warden_auth_events_total{event="configuration_change"} 0
warden_auth_events_total{event="invalid_token"} 0
warden_auth_events_total{event="ip_blocked"} 0
warden_auth_events_total{event="jwt_validation_error"} 0
warden_auth_events_total{event="mfa_failed"} 0
warden_auth_events_total{event="other"} 2
warden_auth_events_total{event="password_reset_requested"} 0
warden_auth_events_total{event="privilege_escalation"} 1
warden_auth_events_total{event="registration"} 0
warden_auth_events_total{event="unauthorized"} 0
warden_auth_events_total{event="unusual_access_pattern"} 0
# HELP warden_auth_failed_logins_by_source Failed logins in the sliding window for the top sources (address or network), with the rest as source="other".
# TYPE warden_auth_failed_logins_by_source gauge
warden_auth_failed_logins_by_source{source="203.0.113.0/24"} 6
warden_auth_failed_logins_by_source{source="198.51.100.0/24"} 2
warden_auth_failed_logins_by_source{source="other"} 2
# HELP warden_auth_failed_logins_window_seconds Length of the sliding window of warden_auth_failed_logins_by_source.
# TYPE warden_auth_failed_logins_window_seconds gauge
warden_auth_failed_logins_window_seconds 600
# HELP warden_auth_files_matched Files each glob of auth.files matched at the last poll; 0 when the glob matches no file.
# TYPE warden_auth_files_matched gauge
warden_auth_files_matched{glob="GLOB"} 1
# HELP warden_auth_log_lines_invalid_total Log lines skipped, by reason.
# TYPE warden_auth_log_lines_invalid_total counter
warden_auth_log_lines_invalid_total{reason="invalid_field"} 1
warden_auth_log_lines_invalid_total{reason="missing_field"} 1
warden_auth_log_lines_invalid_total{reason="not_json"} 1
warden_auth_log_lines_invalid_total{reason="too_long"} 1
# HELP warden_auth_log_lines_total Log lines read from auth-service's logs, valid or not.
# TYPE warden_auth_log_lines_total counter
warden_auth_log_lines_total 20
# HELP warden_auth_login_attempts_total Login attempts (authentication_attempt events) read from auth-service's logs.
# TYPE warden_auth_login_attempts_total counter
warden_auth_login_attempts_total 2
# HELP warden_auth_login_failures_total Failed logins (authentication_failed events) read from auth-service's logs.
# TYPE warden_auth_login_failures_total counter
warden_auth_login_failures_total 10
# HELP warden_auth_login_successes_total Successful logins (authentication_success events) read from auth-service's logs.
# TYPE warden_auth_login_successes_total counter
warden_auth_login_successes_total 1
# HELP warden_auth_risk_score Risk scores carried by auth-service's log lines.
# TYPE warden_auth_risk_score histogram
warden_auth_risk_score_bucket{le="0.1"} 16
warden_auth_risk_score_bucket{le="0.2"} 16
warden_auth_risk_score_bucket{le="0.3"} 16
warden_auth_risk_score_bucket{le="0.4"} 16
warden_auth_risk_score_bucket{le="0.5"} 16
warden_auth_risk_score_bucket{le="0.6"} 16
warden_auth_risk_score_bucket{le="0.7"} 16
warden_auth_risk_score_bucket{le="0.8"} 16
warden_auth_risk_score_bucket{le="0.9"} 16
warden_auth_risk_score_bucket{le="1"} 16
warden_auth_risk_score_bucket{le="+Inf"} 16
warden_auth_risk_score_sum 1.6000000000000003
warden_auth_risk_score_count 16
# HELP warden_auth_source_distinct_users Estimated distinct usernames with failed logins in the sliding window, for the sources of warden_auth_failed_logins_by_source (source="other": all the others together).
# TYPE warden_auth_source_distinct_users gauge
warden_auth_source_distinct_users{source="198.51.100.0/24"} 1
warden_auth_source_distinct_users{source="203.0.113.0/24"} 1
warden_auth_source_distinct_users{source="other"} 1
# HELP warden_auth_source_pattern 1 when a source of warden_auth_failed_logins_by_source shows the pattern over the sliding window: brute_force (many failures on few usernames) or spraying (many usernames, few tries each).
# TYPE warden_auth_source_pattern gauge
warden_auth_source_pattern{pattern="brute_force",source="198.51.100.0/24"} 0
warden_auth_source_pattern{pattern="brute_force",source="203.0.113.0/24"} 0
warden_auth_source_pattern{pattern="spraying",source="198.51.100.0/24"} 0
warden_auth_source_pattern{pattern="spraying",source="203.0.113.0/24"} 0
# HELP warden_auth_success_after_failures_total Successful logins that ended a run of at least success_after_failures failed logins, for the same username (kind="user") or from the same source (kind="source").
# TYPE warden_auth_success_after_failures_total counter
warden_auth_success_after_failures_total{kind="source"} 0
warden_auth_success_after_failures_total{kind="user"} 0
# HELP warden_auth_window_success_ratio Successful logins over successful and failed logins in the sliding window; absent without logins in the window.
# TYPE warden_auth_window_success_ratio gauge
warden_auth_window_success_ratio 0.09090909090909091
`
	want = strings.Replace(want, "GLOB", filepath.Join(dir, "*.log"), 1)
	if err := testutil.CollectAndCompare(pc, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if err := pc.LastErr(); err != nil {
		t.Fatalf("Collect error: %v", err)
	}
	problems, err := testutil.CollectAndLint(pc)
	if err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	promtoolCheckMetrics(t, pc)
}

// promtoolCheckMetrics runs `promtool check metrics` on a collector's
// exposition.
func promtoolCheckMetrics(t *testing.T, c prometheus.Collector) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	testenv.CheckMetrics(t, "auth", testenv.Exposition(t, reg))
}

func TestAuthCollectorIPv6AggregationAndUnknownSource(t *testing.T) {
	cfg := authTestConfig(t, "auth: {files: [unused.log], aggregate_ipv6_prefix: 64}")
	c, err := newCollector(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"2001:db8:1:2::5", "2001:db8:1:2::6", "10.0.0.1", ""} {
		c.Line([]byte(strings.TrimSpace(authJSONLine("authentication_failed", ip))))
	}
	want := `
# HELP warden_auth_failed_logins_by_source Failed logins in the sliding window for the top sources (address or network), with the rest as source="other".
# TYPE warden_auth_failed_logins_by_source gauge
warden_auth_failed_logins_by_source{source="2001:db8:1:2::/64"} 2
warden_auth_failed_logins_by_source{source="10.0.0.1"} 1
warden_auth_failed_logins_by_source{source="unknown"} 1
warden_auth_failed_logins_by_source{source="other"} 0
`
	pc := &exportertest.Adapter{C: c, Timeout: time.Second}
	if err := testutil.CollectAndCompare(pc, strings.NewReader(want), "warden_auth_failed_logins_by_source"); err != nil {
		t.Fatal(err)
	}
}

// TestAuthQueriesAgainstPostgres checks a configured query on a real
// PostgreSQL: the value, caching for min_interval with the age reported,
// refresh afterwards, errors for bad result shapes, and that a hanging query
// is cut at its timeout and at the scrape deadline.
func TestAuthQueriesAgainstPostgres(t *testing.T) {
	const db = "authq"
	dsn := sharedPG.Get(t).CreateDatabase(t, db)
	ctx := t.Context()
	if err := sharedPG.Get(t).Exec(ctx, db, "CREATE TABLE sessions (id int, expires_at timestamptz)",
		"INSERT INTO sessions SELECT g, now() + interval '1 hour' FROM generate_series(1, 3) g"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARDEN_AUTH_TEST_PW", "unused-by-trust-auth")
	cfg := authTestConfig(t, fmt.Sprintf(`
auth:
  files: [unused.log]
  queries:
  - name: active_sessions
    dsn: %q
    password: {env: WARDEN_AUTH_TEST_PW}
    sql: SELECT count(*) FROM sessions WHERE expires_at > now()
    min_interval: 1h
  - name: fresh_ratio
    dsn: %q
    sql: SELECT 0.25::numeric
    min_interval: 0s
  - name: two_columns
    dsn: %q
    sql: SELECT 1, 2
  - name: slow
    dsn: %q
    sql: SELECT pg_sleep(30)
    timeout: 300ms
`, dsn, dsn, dsn, dsn))
	c, err := newCollector(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	clock := time.Now()
	c.now = func() time.Time { return clock }
	pc := &exportertest.Adapter{C: c, Timeout: 10 * time.Second}

	start := time.Now()
	mfs := gatherAuth(t, pc)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("scrape took %v with a 300ms query timeout", d)
	}
	err = pc.LastErr()
	if err == nil || !strings.Contains(err.Error(), "two_columns: query returns 2 columns, want 1") || !strings.Contains(err.Error(), "auth query slow") {
		t.Fatalf("Collect error = %v, want errors for two_columns and slow", err)
	}
	checkQuery := func(name string, wantValue, wantAge float64, present bool) {
		t.Helper()
		v, okV := authGauge(mfs, "warden_auth_query_value", name)
		a, okA := authGauge(mfs, "warden_auth_query_age_seconds", name)
		if okV != present || okA != present || (present && (v != wantValue || a != wantAge)) {
			t.Fatalf("query %s: value %v (%v) age %v (%v), want %v age %v present %v", name, v, okV, a, okA, wantValue, wantAge, present)
		}
	}
	checkQuery("active_sessions", 3, 0, true)
	checkQuery("fresh_ratio", 0.25, 0, true)
	checkQuery("two_columns", 0, 0, false)
	checkQuery("slow", 0, 0, false)
	promtoolCheckMetrics(t, pc)

	// Within min_interval: the cached value is served and its age grows.
	if err := sharedPG.Get(t).Exec(ctx, db, "INSERT INTO sessions VALUES (4, now() + interval '1 hour')"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(30 * time.Minute)
	mfs = gatherAuth(t, pc)
	checkQuery("active_sessions", 3, 1800, true)
	checkQuery("fresh_ratio", 0.25, 0, true)

	// After min_interval: refreshed.
	clock = clock.Add(31 * time.Minute)
	mfs = gatherAuth(t, pc)
	checkQuery("active_sessions", 4, 0, true)

	// A scrape deadline shorter than the query timeout wins.
	c.queries = []*authQuery{c.queries[3]}
	c.queries[0].cfg.Timeout = time.Minute
	clock = clock.Add(time.Hour)
	short := &exportertest.Adapter{C: c, Timeout: 300 * time.Millisecond}
	start = time.Now()
	gatherAuth(t, short)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("scrape with a 300ms deadline took %v", d)
	}
	if short.LastErr() == nil {
		t.Error("no error for a query cut by the scrape deadline")
	}
}

func gatherAuth(t *testing.T, c prometheus.Collector) map[string][]*authTestMetric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*authTestMetric{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			pm := &authTestMetric{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				pm.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetGauge() != nil:
				pm.value = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				pm.value = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				pm.value = float64(m.GetHistogram().GetSampleCount())
			}
			out[mf.GetName()] = append(out[mf.GetName()], pm)
		}
	}
	return out
}

type authTestMetric struct {
	labels map[string]string
	value  float64
}

func authGauge(mfs map[string][]*authTestMetric, name, query string) (float64, bool) {
	for _, m := range mfs[name] {
		if m.labels["query"] == query {
			return m.value, true
		}
	}
	return 0, false
}

// TestAuthCollectorReadsSimulatorLogs follows the log file written by the
// auth-service simulator under a brute-force attack: the collector's
// failure counter matches the simulator's own auth_failed_logins_total, and
// the attacking addresses are the top sources with exactly their counts.
func TestAuthCollectorReadsSimulatorLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sim, err := authsim.New(authsim.Config{InstanceID: "sim-1", Rate: 500, Log: f, Seed: 7,
		Fault: authsim.Fault{BruteForce: authsim.BruteForce{Sources: []string{"203.0.113.7", "203.0.113.8"}, Rate: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := authTestConfig(t, fmt.Sprintf("auth: {files: [%q], from_beginning: true, poll_interval: 10ms, top_k: 2}", path))
	c, err := New(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sim.Generate(2 * time.Second)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	waitAuthLines(t, c, uint64(bytes.Count(data, []byte("\n"))))

	simFailed := -1.0
	simMetrics, err := sim.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range simMetrics {
		if mf.GetName() == "auth_failed_logins_total" {
			simFailed = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	mfs := gatherAuth(t, &exportertest.Adapter{C: c, Timeout: time.Second})
	if got := mfs["warden_auth_login_failures_total"][0].value; got != simFailed {
		t.Errorf("warden_auth_login_failures_total = %v, simulator counted %v", got, simFailed)
	}
	if got := mfs["warden_auth_log_lines_invalid_total"]; len(got) == 0 {
		t.Error("no invalid-lines series")
	}
	for _, m := range mfs["warden_auth_log_lines_invalid_total"] {
		if m.value != 0 {
			t.Errorf("simulator lines counted invalid: %v %v", m.labels, m.value)
		}
	}
	var attack float64
	for _, m := range mfs["warden_auth_failed_logins_by_source"] {
		switch src := m.labels["source"]; src {
		case "203.0.113.7", "203.0.113.8":
			attack += m.value
		case "other":
			if m.value != simFailed-200 {
				t.Errorf("other = %v, want %v", m.value, simFailed-200)
			}
		default:
			t.Errorf("unexpected top source %s = %v", src, m.value)
		}
	}
	if attack != 200 {
		t.Errorf("failed logins from the attackers = %v, want 200", attack)
	}
}
