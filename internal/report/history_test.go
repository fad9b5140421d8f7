package report

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
)

// A synthetic history of the platform, written as OpenMetrics with
// timestamps for promtool to backfill: 31 days at a 15-minute resolution
// of the series the reports read, with known shapes (a database growing by
// exactly 10 MiB a day, a PostgreSQL outage eight hours before the end
// with its page, a breaker that opened, certificates ending in 10, 20 and 200
// days). jwt_tokens_issued_total and redis_memory_max_bytes are left out
// on purpose: the reports must call them missing.
const (
	historyStep = 15 * time.Minute
	historyDays = 31
	mib         = 1024 * 1024
	gib         = 1024 * mib
)

var historyEnd = time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)

// series is one labelled series: value(t) gives the sample at t, ok false
// leaves a gap (the series does not exist at t).
type series struct {
	labels string
	value  func(t time.Time) (float64, bool)
}

func always(f func(t time.Time) float64) func(time.Time) (float64, bool) {
	return func(t time.Time) (float64, bool) { return f(t), true }
}

func constant(v float64) func(time.Time) (float64, bool) {
	return always(func(time.Time) float64 { return v })
}

// since is the seconds from the start of the history to t.
func since(t time.Time) float64 {
	return t.Sub(historyEnd.Add(-historyDays * day)).Seconds()
}

// counter grows at rate per second from 0 at the start of the history.
func counter(rate float64) func(time.Time) (float64, bool) {
	return always(func(t time.Time) float64 { return math.Floor(rate * since(t)) })
}

// between is true when t lies in [end-from, end-to).
func between(t time.Time, from, to time.Duration) bool {
	return !t.Before(historyEnd.Add(-from)) && t.Before(historyEnd.Add(-to))
}

// steps counts the events that happened before t, each at end-at.
func steps(ats ...time.Duration) func(time.Time) (float64, bool) {
	return always(func(t time.Time) float64 {
		n := 0.0
		for _, at := range ats {
			if !t.Before(historyEnd.Add(-at)) {
				n++
			}
		}
		return n
	})
}

func history() map[string][]series {
	pgOutage := func(t time.Time) bool { return between(t, 8*time.Hour, 7*time.Hour) }
	h := map[string][]series{
		"up": {
			{`job="auth-service",instance="auth-1"`, constant(1)},
			{`job="auth-service",instance="auth-2"`, always(func(t time.Time) float64 {
				if between(t, 6*time.Hour, 3*time.Hour) {
					return 0
				}
				return 1
			})},
			{`job="policy-service",instance="policy-1"`, constant(1)},
		},
		"pg_up": {{`target="main"`, always(func(t time.Time) float64 {
			if pgOutage(t) {
				return 0
			}
			return 1
		})}},
		"pg_stat_database_numbackends": {
			{`target="main",datname="auth_service"`, always(func(t time.Time) float64 { return 10 + float64(t.Hour()%5) })},
			{`target="main",datname="postgres"`, constant(3)},
		},
		"pg_settings_max_connections": {{`target="main"`, constant(100)}},
		"pg_database_size_bytes": {
			{`target="main",datname="auth_service"`, always(func(t time.Time) float64 { return gib + 10*mib*since(t)/86400 })},
			{`target="main",datname="postgres"`, constant(8 * mib)},
		},
		"pg_stat_user_tables_size_bytes": {
			{`target="main",datname="auth_service",schemaname="public",relname="sessions"`, always(func(t time.Time) float64 { return 300*mib + 6*mib*since(t)/86400 })},
			{`target="main",datname="auth_service",schemaname="public",relname="users"`, always(func(t time.Time) float64 { return 50*mib + mib*since(t)/86400 })},
			{`target="main",datname="auth_service",schemaname="other",relname="other"`, constant(20 * mib)},
		},
		"redis_up": {{`target="session-cache"`, constant(1)}},
		"redis_memory_used_bytes": {{`target="session-cache"`, always(func(t time.Time) float64 {
			return 200*mib + 50*mib*math.Sin(since(t)/86400*2*math.Pi) + 2*mib*since(t)/86400
		})}},
		"node_filesystem_avail_bytes": {
			{`instance="node-1",mountpoint="/var/lib/postgresql/data",fstype="ext4",device="/dev/sdb"`, always(func(t time.Time) float64 { return 40*gib - 0.5*gib*since(t)/86400 })},
			{`instance="node-1",mountpoint="/",fstype="ext4",device="/dev/sda1"`, constant(30 * gib)},
			{`instance="node-1",mountpoint="/run",fstype="tmpfs",device="tmpfs"`, constant(1 * mib)},
		},
		"node_filesystem_size_bytes": {
			{`instance="node-1",mountpoint="/var/lib/postgresql/data",fstype="ext4",device="/dev/sdb"`, constant(100 * gib)},
			{`instance="node-1",mountpoint="/",fstype="ext4",device="/dev/sda1"`, constant(50 * gib)},
			{`instance="node-1",mountpoint="/run",fstype="tmpfs",device="tmpfs"`, constant(100 * mib)},
		},
		"x509_cert_not_after": {
			{`source_kind="endpoint",source="auth-service:8443",subject_CN="auth.example.com",issuer_CN="Example Intermediate",serial_number="11",position="leaf"`, constant(float64(historyEnd.Add(10 * day).Unix()))},
			{`source_kind="endpoint",source="auth-service:8443",subject_CN="Example Intermediate",issuer_CN="Example Root",serial_number="12",position="intermediate"`, constant(float64(historyEnd.Add(20 * day).Unix()))},
			{`source_kind="kubernetes",source="rust-security/policy-tls",subject_CN="policy.example.com",issuer_CN="Example Root",serial_number="21",position="leaf"`, constant(float64(historyEnd.Add(200 * day).Unix()))},
		},
		"warden_certs_chain_verified": {
			{`source_kind="endpoint",source="auth-service:8443"`, constant(0)},
		},
		"warden_certs_source_success": {
			{`source_kind="endpoint",source="auth-service:8443"`, constant(1)},
			{`source_kind="kubernetes",source="rust-security/policy-tls"`, constant(1)},
		},
		"auth_requests_total": {
			{`job="auth-service",status="200"`, counter(5)},
			{`job="auth-service",status="401"`, counter(0.5)},
			{`job="auth-service",status="500"`, counter(0.05)},
			{`job="policy-service",status="200"`, counter(2)},
		},
		"auth_request_duration_seconds_bucket": {
			{`job="auth-service",le="0.05"`, counter(0.6 * 7.5)},
			{`job="auth-service",le="0.1"`, counter(0.85 * 7.5)},
			{`job="auth-service",le="0.5"`, counter(0.99 * 7.5)},
			{`job="auth-service",le="+Inf"`, counter(7.5)},
		},
		"auth_request_duration_seconds_sum":   {{`job="auth-service"`, counter(0.04 * 7.5)}},
		"auth_request_duration_seconds_count": {{`job="auth-service"`, counter(7.5)}},
		"auth_failed_logins_total":            {{`job="auth-service"`, counter(0.5)}},
		"auth_jwt_validation_errors_total":    {{`job="auth-service"`, counter(0.01)}},
		"warden_auth_login_attempts_total":    {{`target="auth"`, counter(3)}},
		"warden_auth_login_successes_total":   {{`target="auth"`, counter(2.5)}},
		"warden_auth_login_failures_total":    {{`target="auth"`, counter(0.5)}},
		"warden_auth_failed_logins_by_source": {
			{`source="203.0.113.7"`, always(func(t time.Time) float64 { return float64(40 + t.Hour()) })},
			{`source="198.51.100.23"`, always(func(t time.Time) float64 { return float64(5 + t.Day()%7) })},
			{`source="other"`, constant(12)},
		},
		"container_cpu_usage_seconds_total": {
			{`namespace="rust-security",pod="auth-service-7d9f8b6c5-x2x4z",container="auth-service"`, counter(0.25)},
			{`namespace="rust-security",pod="policy-service-5c6d7f8b9-q8r7t",container="policy-service"`, counter(0.1)},
		},
		"container_memory_working_set_bytes": {
			{`namespace="rust-security",pod="auth-service-7d9f8b6c5-x2x4z",container="auth-service"`, always(func(t time.Time) float64 { return 200*mib + float64(t.Hour())*mib })},
			{`namespace="rust-security",pod="policy-service-5c6d7f8b9-q8r7t",container="policy-service"`, constant(120 * mib)},
		},
		"kube_pod_container_resource_limits": {
			{`namespace="rust-security",pod="auth-service-7d9f8b6c5-x2x4z",container="auth-service",resource="memory",unit="byte"`, constant(512 * mib)},
			{`namespace="rust-security",pod="policy-service-5c6d7f8b9-q8r7t",container="policy-service",resource="memory",unit="byte"`, constant(256 * mib)},
		},
		"ALERTS": {
			{`alertname="PostgresDown",alertstate="firing",severity="critical",target="main"`, func(t time.Time) (float64, bool) { return 1, pgOutage(t) }},
			{`alertname="HighErrorRate",alertstate="firing",severity="warning",job="auth-service"`, func(t time.Time) (float64, bool) { return 1, between(t, 10*day, 10*day-2*time.Hour) }},
			{`alertname="AuthServiceTargetDown",alertstate="firing",severity="critical",job="auth-service"`, func(t time.Time) (float64, bool) {
				return 1, between(t, 6*time.Hour-15*time.Minute, 3*time.Hour)
			}},
		},
		"warden_remediator_actions_total": {
			{`action="restart",outcome="success",instance="remediator-0"`, steps(5*time.Hour, 20*day)},
			{`action="restart",outcome="failed",instance="remediator-0"`, steps(4 * time.Hour)},
			{`action="scale",outcome="success",instance="remediator-0"`, constant(0)},
			{`action="flush-cache",outcome="dry_run",instance="remediator-1"`, steps(12 * day)},
		},
		"warden_remediator_skipped_total": {
			{`reason="cooldown",instance="remediator-0"`, steps(5*time.Hour-15*time.Minute, 4*time.Hour-15*time.Minute, 9*day)},
			{`reason="duplicate",instance="remediator-1"`, steps(5 * time.Hour)},
			{`reason="not_allowed",instance="remediator-0"`, constant(0)},
		},
		"warden_remediator_escalations_total": {
			// Created at 0 by an earlier scrape, as when the replica saw the
			// target before the breaker opened.
			{`namespace="rust-security",target="deployment/auth-service",instance="remediator-0"`, func(t time.Time) (float64, bool) {
				if t.Before(historyEnd.Add(-5 * time.Hour)) {
					return 0, true
				}
				return 1, true
			}},
		},
		"warden_remediator_build_info": {
			{`version="0.4.0",revision="abc123",instance="remediator-0"`, constant(1)},
			{`version="0.4.0",revision="abc123",instance="remediator-1"`, constant(1)},
		},
		"warden_remediator_breaker_open": {
			{`namespace="rust-security",target="deployment/auth-service",instance="remediator-0"`, always(func(t time.Time) float64 {
				if t.Before(historyEnd.Add(-4 * time.Hour)) {
					return 0
				}
				return 1
			})},
		},
	}
	events := map[string]float64{
		"authentication_attempt": 3, "authentication_success": 2.5, "authentication_failed": 0.5,
		"invalid_token": 0.02, "jwt_validation_error": 0.01, "unauthorized": 0.03, "ip_blocked": 0.001,
		"unusual_access_pattern": 0.002, "admin_action": 0.0005, "privilege_escalation": 0, "configuration_change": 0.0001, "other": 0,
	}
	for e, rate := range events {
		h["warden_auth_events_total"] = append(h["warden_auth_events_total"], series{`target="auth",event="` + e + `"`, counter(rate)})
	}
	sort.Slice(h["warden_auth_events_total"], func(i, j int) bool {
		return h["warden_auth_events_total"][i].labels < h["warden_auth_events_total"][j].labels
	})
	return h
}

// openMetrics writes the history in the OpenMetrics text format with
// timestamps: every family's samples together, each series in time order.
func openMetrics() []byte {
	h := history()
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	start := historyEnd.Add(-historyDays * day)
	for _, name := range names {
		fmt.Fprintf(&b, "# TYPE %s unknown\n", name)
		for _, s := range h[name] {
			prefix := name + "{" + s.labels + "} "
			for t := start; !t.After(historyEnd); t = t.Add(historyStep) {
				v, ok := s.value(t)
				if !ok {
					continue
				}
				b.WriteString(prefix)
				b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
				fmt.Fprintf(&b, " %d\n", t.Unix())
			}
		}
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}
