// Package inventory lists every metric name that warden's alert rules and
// dashboards may query, with who produces it: the exporter, the remediator,
// the auth-service contract, Prometheus itself, the recording rules, or an
// external Kubernetes exporter. Tests of the rules, the dashboards and the
// exporter compare against this one list, so a misspelt name in an
// expression, or a metric dropped from a collector, fails the build.
package inventory

import (
	"sort"
	"strings"
)

// Source says who produces a metric.
type Source string

// The producers of the metrics warden queries.
const (
	Exporter    Source = "warden-exporter"
	Remediator  Source = "warden-remediator"
	AuthService Source = "auth-service"
	Prometheus  Source = "prometheus"
	Recording   Source = "recording-rule"
	// External metrics come from cAdvisor (kubelet), kube-state-metrics or
	// node_exporter, which warden does not ship.
	External Source = "external"
)

// Type is the Prometheus metric type.
type Type string

// The metric types that occur in the inventory.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Metric is one metric family.
type Metric struct {
	Name   string
	Type   Type
	Source Source
	// Collector names the exporter collector that produces the metric:
	// postgres, redis, certs, auth or self.
	Collector string
	// Conditional is empty when a scrape of a configured, reachable target
	// always contains the metric; otherwise it says when the metric is
	// present, and the exporter scrape test does not require it.
	Conditional string
}

var metrics = []Metric{
	// PostgreSQL, named as postgres_exporter names them.
	{Name: "pg_up", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_static", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_settings_max_connections", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_settings_superuser_reserved_connections", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_settings_reserved_connections", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_numbackends", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "warden_postgres_activity_connections", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_activity_max_tx_duration", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_database_size_bytes", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_xact_commit_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_xact_rollback_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_deadlocks_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_blks_read_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_blks_hit_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_temp_bytes_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_database_conflicts_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_postmaster_start_time_seconds", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_bgwriter_checkpoints_timed_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_stat_bgwriter_checkpoints_req_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "pg_locks_waiting", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_database_wraparound_age_datfrozenxid", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_replication_is_replica", Type: Gauge, Source: Exporter, Collector: "postgres"},
	{Name: "pg_replication_lag_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only on a streaming replica"},
	{Name: "warden_postgres_wal_receiver_streaming", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only on a replica"},
	{Name: "warden_postgres_wal_receiver_last_receipt_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only on a replica whose WAL receiver is running"},
	{Name: "pg_stat_user_tables_size_bytes", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for databases with user tables"},
	{Name: "pg_stat_user_tables_n_dead_tup", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for databases with user tables"},
	{Name: "pg_stat_user_tables_n_live_tup", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for databases with user tables"},
	{Name: "pg_stat_user_tables_last_vacuum_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for tables vacuumed at least once"},
	{Name: "pg_stat_user_tables_last_autovacuum_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for tables autovacuumed at least once"},
	{Name: "pg_stat_user_tables_last_analyze_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for tables analyzed at least once"},
	{Name: "pg_stat_user_tables_last_autoanalyze_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only for tables autoanalyzed at least once"},
	{Name: "pg_stat_statements_calls_total", Type: Counter, Source: Exporter, Collector: "postgres",
		Conditional: "only with the pg_stat_statements extension installed"},
	{Name: "pg_stat_statements_seconds_total", Type: Counter, Source: Exporter, Collector: "postgres",
		Conditional: "only with the pg_stat_statements extension installed"},
	{Name: "pg_stat_statements_mean_seconds", Type: Gauge, Source: Exporter, Collector: "postgres",
		Conditional: "only with the pg_stat_statements extension installed"},
	{Name: "pg_stat_statements_rows_total", Type: Counter, Source: Exporter, Collector: "postgres",
		Conditional: "only with the pg_stat_statements extension installed"},
	{Name: "warden_postgres_stat_statements_dealloc_total", Type: Counter, Source: Exporter, Collector: "postgres",
		Conditional: "only with the pg_stat_statements extension installed, PostgreSQL 14 and later"},
	{Name: "warden_postgres_query_failures_total", Type: Counter, Source: Exporter, Collector: "postgres"},
	{Name: "warden_postgres_accepts_connections", Type: Gauge, Source: Exporter, Collector: "postgres"},

	// Redis, named as redis_exporter names them.
	{Name: "redis_up", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_memory_used_bytes", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_memory_max_bytes", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_connected_clients", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_blocked_clients", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_rejected_connections_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_keyspace_hits_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_keyspace_misses_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_evicted_keys_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_expired_keys_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_db_keys", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only for databases that hold keys"},
	{Name: "redis_commands_processed_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_rdb_last_save_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_rdb_last_bgsave_status", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_instance_info", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_connected_slaves", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_master_link_up", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only on a replica"},
	{Name: "warden_redis_ping_duration_seconds", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_uptime_in_seconds", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_config_maxclients", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_memory_used_rss_bytes", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_memory_used_peak_bytes", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_mem_fragmentation_ratio", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_loading_dump_file", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_rdb_changes_since_last_save", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_rdb_bgsave_in_progress", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_rdb_last_bgsave_duration_seconds", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_aof_enabled", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_connections_received_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_net_input_bytes_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_net_output_bytes_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_pubsub_channels", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_latest_fork_seconds", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_master_repl_offset", Type: Gauge, Source: Exporter, Collector: "redis"},
	{Name: "redis_master_last_io_seconds_ago", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only on a replica"},
	{Name: "redis_master_sync_in_progress", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only on a replica"},
	{Name: "redis_cpu_sys_seconds_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_cpu_user_seconds_total", Type: Counter, Source: Exporter, Collector: "redis"},
	{Name: "redis_db_keys_expiring", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only for databases that hold keys"},
	{Name: "redis_db_avg_ttl_seconds", Type: Gauge, Source: Exporter, Collector: "redis",
		Conditional: "only for databases that hold keys"},

	// Certificates, named as x509-certificate-exporter names them.
	{Name: "x509_cert_not_after", Type: Gauge, Source: Exporter, Collector: "certs"},
	{Name: "x509_cert_not_before", Type: Gauge, Source: Exporter, Collector: "certs"},
	{Name: "warden_certs_chain_earliest_not_after", Type: Gauge, Source: Exporter, Collector: "certs"},
	{Name: "warden_certs_chain_verified", Type: Gauge, Source: Exporter, Collector: "certs"},
	{Name: "warden_certs_source_success", Type: Gauge, Source: Exporter, Collector: "certs"},
	{Name: "warden_certs_errors_total", Type: Counter, Source: Exporter, Collector: "certs",
		Conditional: "only once a certificate source has failed"},
	{Name: "warden_certs_served_stale", Type: Gauge, Source: Exporter, Collector: "certs",
		Conditional: "only with both certs.endpoints and certs.kubernetes, for endpoints whose certificate's subject a Secret has"},

	// Security events from the auth-service log stream.
	{Name: "warden_auth_login_attempts_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_login_successes_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_login_failures_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_events_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_failed_logins_by_source", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_failed_logins_window_seconds", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_source_distinct_users", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_source_pattern", Type: Gauge, Source: Exporter, Collector: "auth",
		Conditional: "only for sources with failed logins in the window"},
	{Name: "warden_auth_distinct_sources", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_distinct_users_failed", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_window_success_ratio", Type: Gauge, Source: Exporter, Collector: "auth",
		Conditional: "only while the window holds logins"},
	{Name: "warden_auth_credential_stuffing", Type: Gauge, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_success_after_failures_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_risk_score", Type: Histogram, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_log_lines_total", Type: Counter, Source: Exporter, Collector: "auth"},
	{Name: "warden_auth_log_lines_invalid_total", Type: Counter, Source: Exporter, Collector: "auth",
		Conditional: "only once an invalid log line was read"},
	{Name: "warden_auth_query_value", Type: Gauge, Source: Exporter, Collector: "auth",
		Conditional: "only with auth queries configured"},
	{Name: "warden_auth_query_age_seconds", Type: Gauge, Source: Exporter, Collector: "auth",
		Conditional: "only with auth queries configured"},
	{Name: "warden_auth_files_matched", Type: Gauge, Source: Exporter, Collector: "auth",
		Conditional: "only with auth.files configured"},

	// The exporter's own health.
	{Name: "warden_exporter_collector_success", Type: Gauge, Source: Exporter, Collector: "self"},
	{Name: "warden_exporter_collector_duration_seconds", Type: Gauge, Source: Exporter, Collector: "self"},
	{Name: "warden_exporter_scrape_timeout_seconds", Type: Gauge, Source: Exporter, Collector: "self"},
	{Name: "warden_exporter_config_last_reload_successful", Type: Gauge, Source: Exporter, Collector: "self",
		Conditional: "registered by the warden-exporter binary, not by exporter.Build"},
	{Name: "warden_exporter_config_last_reload_success_timestamp_seconds", Type: Gauge, Source: Exporter, Collector: "self",
		Conditional: "registered by the warden-exporter binary, not by exporter.Build"},
	{Name: "warden_exporter_build_info", Type: Gauge, Source: Exporter, Collector: "self",
		Conditional: "registered by the warden-exporter binary, not by exporter.Build"},

	// The remediator.
	{Name: "warden_remediator_actions_total", Type: Counter, Source: Remediator},
	{Name: "warden_remediator_skipped_total", Type: Counter, Source: Remediator},
	{Name: "warden_remediator_webhook_requests_total", Type: Counter, Source: Remediator},
	{Name: "warden_remediator_webhook_duration_seconds", Type: Histogram, Source: Remediator},
	{Name: "warden_remediator_queue_depth", Type: Gauge, Source: Remediator},
	{Name: "warden_remediator_action_duration_seconds", Type: Histogram, Source: Remediator},
	{Name: "warden_remediator_breaker_open", Type: Gauge, Source: Remediator},
	{Name: "warden_remediator_escalations_total", Type: Counter, Source: Remediator},
	{Name: "warden_remediator_config_last_reload_successful", Type: Gauge, Source: Remediator},
	{Name: "warden_remediator_config_last_reload_success_timestamp_seconds", Type: Gauge, Source: Remediator},
	{Name: "warden_remediator_build_info", Type: Gauge, Source: Remediator},
	{Name: "warden_remediator_outcomes_total", Type: Counter, Source: Remediator},
	{Name: "warden_remediator_time_to_recovery_seconds", Type: Histogram, Source: Remediator},

	// auth-service's own metrics (the contract cmd/authsim implements).
	{Name: "auth_requests_total", Type: Counter, Source: AuthService},
	{Name: "auth_request_duration_seconds", Type: Histogram, Source: AuthService},
	{Name: "auth_active_sessions", Type: Gauge, Source: AuthService},
	{Name: "auth_jwt_validation_errors_total", Type: Counter, Source: AuthService},
	{Name: "jwt_tokens_issued_total", Type: Counter, Source: AuthService},
	{Name: "auth_failed_logins_total", Type: Counter, Source: AuthService},

	// Written by Prometheus for every scrape target, and Prometheus's own
	// metrics.
	{Name: "up", Type: Gauge, Source: Prometheus},
	{Name: "prometheus_rule_evaluation_failures_total", Type: Counter, Source: Prometheus},

	// Kubernetes and node metrics warden does not produce.
	{Name: "container_memory_working_set_bytes", Type: Gauge, Source: External, Collector: "cadvisor"},
	{Name: "kube_pod_container_resource_limits", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_pod_container_status_waiting_reason", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_pod_container_status_restarts_total", Type: Counter, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_pod_container_status_last_terminated_reason", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_deployment_spec_replicas", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_deployment_status_replicas_available", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "kube_deployment_status_condition", Type: Gauge, Source: External, Collector: "kube-state-metrics"},
	{Name: "container_cpu_cfs_periods_total", Type: Counter, Source: External, Collector: "cadvisor"},
	{Name: "container_cpu_cfs_throttled_periods_total", Type: Counter, Source: External, Collector: "cadvisor"},
	{Name: "kubelet_volume_stats_available_bytes", Type: Gauge, Source: External, Collector: "kubelet"},
	{Name: "kubelet_volume_stats_capacity_bytes", Type: Gauge, Source: External, Collector: "kubelet"},
	{Name: "node_filesystem_avail_bytes", Type: Gauge, Source: External, Collector: "node_exporter"},
	{Name: "node_filesystem_size_bytes", Type: Gauge, Source: External, Collector: "node_exporter"},
	// Alertmanager's own metrics; receiver_name needs
	// --enable-feature=receiver-name-in-metrics.
	{Name: "alertmanager_notifications_failed_total", Type: Counter, Source: External, Collector: "alertmanager"},

	// Recording rules in rules/*.rules.yml (the rules test keeps this list
	// and the files identical).
	{Name: "job:auth_requests:rate5m", Type: Gauge, Source: Recording},
	{Name: "job_status:auth_requests:rate5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_request_errors:rate5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_request_errors:ratio_rate5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_request_success:ratio_rate5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_request_duration_seconds:p95_5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_request_duration_seconds:p99_5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_jwt_validation_errors:rate5m", Type: Gauge, Source: Recording},
	{Name: "job:auth_failed_logins:rate5m", Type: Gauge, Source: Recording},
	{Name: "target:redis_keyspace_hits:ratio_rate5m", Type: Gauge, Source: Recording},
	{Name: "target:pg_connections:ratio", Type: Gauge, Source: Recording},
	{Name: "slo:availability_objective:ratio", Type: Gauge, Source: Recording},
	{Name: "slo:latency_objective:ratio", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate5m", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate30m", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate1h", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate2h", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate6h", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate1d", Type: Gauge, Source: Recording},
	{Name: "job:slo_availability_errors:ratio_rate3d", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate5m", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate30m", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate1h", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate2h", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate6h", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate1d", Type: Gauge, Source: Recording},
	{Name: "job:slo_latency_errors:ratio_rate3d", Type: Gauge, Source: Recording},
}

var byName = func() map[string]Metric {
	m := make(map[string]Metric, len(metrics))
	for _, mt := range metrics {
		if _, dup := m[mt.Name]; dup {
			panic("inventory: duplicate metric " + mt.Name)
		}
		m[mt.Name] = mt
	}
	return m
}()

// All returns every metric family, sorted by name.
func All() []Metric {
	out := append([]Metric(nil), metrics...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// BySource returns the metric families one producer exposes, sorted by name.
func BySource(s Source) []Metric {
	var out []Metric
	for _, m := range All() {
		if m.Source == s {
			out = append(out, m)
		}
	}
	return out
}

// Lookup finds the family a series name belongs to. The _bucket, _sum and
// _count series of a histogram resolve to the histogram, with Type Counter
// since each of them only ever grows.
func Lookup(name string) (Metric, bool) {
	if m, ok := byName[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, suffix)
		if !found {
			continue
		}
		if m, ok := byName[base]; ok && m.Type == Histogram {
			m.Name = name
			m.Type = Counter
			return m, true
		}
	}
	return Metric{}, false
}
