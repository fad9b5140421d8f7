package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// services are the jobs (and container names) of the platform's own
// services, as the runbook names them.
const services = `auth-service|policy-service`

// remediatorProducer exists whenever warden-remediator is scraped; its
// per-target series only once a target was handled.
const remediatorProducer = "warden_remediator_build_info"

// Filesystems that are not disks, as rules/platform.rules.yml excludes them.
const realFilesystems = `fstype!~"tmpfs|ramfs|squashfs|nsfs|fuse.lxcfs"`

// Define returns the checks of a report kind.
func Define(kind Kind, opts Options) (Definition, error) {
	opts = opts.withDefaults()
	switch kind {
	case Daily:
		return daily(), nil
	case Weekly:
		return weekly(), nil
	case Monthly:
		return monthly(opts.Namespace), nil
	case Security:
		return security(), nil
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return Definition{}, fmt.Errorf("unknown report %q (one of %s)", kind, strings.Join(names, ", "))
}

// expand replaces $w with a window such as 24h, 7d or 30d, so that one
// expression reads the same in the code and in docs/report.md.
func expand(expr, window string) string { return strings.ReplaceAll(expr, "$w", window) }

func daily() Definition {
	w := "24h"
	x := func(s string) string { return expand(s, w) }
	return Definition{
		Kind:   Daily,
		Title:  "Daily health check",
		Window: day,
		Sections: []Section{
			{
				Title: "Services",
				Intro: "Scrape targets of auth-service and policy-service: up now, and the share of scrapes that succeeded in the last 24 hours.",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "Targets up",
						Labels: []string{"job"},
						Columns: []Column{
							{Header: "targets up now", Query: `sum by (job) (up{job=~"` + services + `"})`, Unit: Count},
							{Header: "targets", Query: `count by (job) (up{job=~"` + services + `"})`, Unit: Count},
							{Header: "availability 24 h", Query: x(`avg by (job) (avg_over_time(up{job=~"` + services + `"}[$w]))`), Unit: Ratio},
						},
					},
					{
						Type:   Chart,
						Title:  "Requests per second by status",
						Note:   "Rate over 1-hour windows.",
						Query:  `sum by (status) (rate(auth_requests_total[1h]))`,
						Unit:   PerSecond,
						Labels: []string{"status"},
						Step:   15 * time.Minute,
					},
					stat("Requests in 24 h", x(`sum(increase(auth_requests_total[$w]))`), Count),
					{
						Type:  Stat,
						Title: "Server errors (5xx) in 24 h",
						Query: x(`sum(increase(auth_requests_total{status=~"5.."}[$w]))`),
						Unit:  Count,
						Empty: "No 5xx answer in 24 hours.",
					},
					stat("95th percentile response time over 24 h", x(`histogram_quantile(0.95, sum by (le) (increase(auth_request_duration_seconds_bucket[$w])))`), Seconds),
				},
			},
			{
				Title: "PostgreSQL and Redis",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "PostgreSQL",
						Labels: []string{"target"},
						Columns: []Column{
							{Header: "now", Query: `max by (target) (pg_up)`, Unit: UpDown},
							{Header: "availability 24 h", Query: x(`avg by (target) (avg_over_time(pg_up[$w]))`), Unit: Ratio},
							{Header: "connections", Query: `sum by (target) (pg_stat_database_numbackends)`, Unit: Count},
							{Header: "max_connections", Query: `max by (target) (pg_settings_max_connections)`, Unit: Count},
						},
					},
					{
						Type:   Table,
						Title:  "Redis",
						Labels: []string{"target"},
						Columns: []Column{
							{Header: "now", Query: `max by (target) (redis_up)`, Unit: UpDown},
							{Header: "availability 24 h", Query: x(`avg by (target) (avg_over_time(redis_up[$w]))`), Unit: Ratio},
							{Header: "memory used", Query: `max by (target) (redis_memory_used_bytes)`, Unit: Bytes},
							{Header: "maxmemory (0: no limit)", Query: `max by (target) (redis_memory_max_bytes)`, Unit: Bytes},
						},
					},
				},
			},
			{
				Title: "Disk space",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "Filesystems with the least space available",
						Labels: []string{"instance", "mountpoint"},
						Order:  ByValueAsc,
						Columns: []Column{
							{Header: "available", Query: `bottomk(10, node_filesystem_avail_bytes{` + realFilesystems + `} / (node_filesystem_size_bytes > 0))`, Unit: Ratio},
							{Header: "available bytes", Query: `node_filesystem_avail_bytes{` + realFilesystems + `}`, Unit: Bytes},
						},
					},
					{
						Type:   Table,
						Title:  "Database sizes",
						Labels: []string{"target", "datname"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "size", Query: `pg_database_size_bytes`, Unit: Bytes},
						},
					},
				},
			},
			{
				Title:  "Certificates",
				Checks: certificateChecks(30),
			},
			{
				Title:  "Alerts in the last 24 hours",
				Checks: []Check{alertsCheck("Alerts that fired", w, "")},
			},
			{
				Title:  "Remediator in the last 24 hours",
				Intro:  "What warden-remediator did about those alerts (summed over its replicas).",
				Checks: remediatorChecks(w),
			},
		},
	}
}

func weekly() Definition {
	w := "7d"
	x := func(s string) string { return expand(s, w) }
	return Definition{
		Kind:   Weekly,
		Title:  "Weekly security review",
		Window: 7 * day,
		Sections: []Section{
			{
				Title: "Failed logins",
				Intro: "From the exporter's reading of auth-service's log (warden_auth_*) and auth-service's own counter.",
				Checks: []Check{
					stat("Login attempts", x(`sum(increase(warden_auth_login_attempts_total[$w]))`), Count),
					stat("Failed logins", x(`sum(increase(warden_auth_login_failures_total[$w]))`), Count),
					stat("Failed logins (auth-service's counter)", x(`sum(increase(auth_failed_logins_total[$w]))`), Count),
					{
						Type:  Stat,
						Title: "Failed share of attempts",
						Query: x(`sum(increase(warden_auth_login_failures_total[$w])) / (sum(increase(warden_auth_login_attempts_total[$w])) > 0)`),
						Unit:  Ratio,
						Empty: "No login attempt in the window.",
					},
					{
						Type:  Chart,
						Title: "Failed logins per hour",
						Query: `sum(increase(warden_auth_login_failures_total[1h]))`,
						Unit:  Count,
						Step:  time.Hour,
					},
					{
						Type:   Table,
						Title:  "Top sources of failed logins",
						Note:   "Highest count each source reached in the exporter's sliding window during the week (a lower bound; see docs/metrics.md).",
						Labels: []string{"source"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "peak failures in the window", Query: x(`topk(10, max by (source) (max_over_time(warden_auth_failed_logins_by_source{source!="other"}[$w])))`), Unit: Count},
						},
						Empty: "No failed login from any single source.",
					},
					eventsTable("Attack patterns", "ip_blocked|unusual_access_pattern|unauthorized", w),
				},
			},
			{
				Title: "Tokens",
				Checks: []Check{
					stat("Tokens issued", x(`sum(increase(jwt_tokens_issued_total[$w]))`), Count),
					stat("JWT validation errors (auth-service's counter)", x(`sum(increase(auth_jwt_validation_errors_total[$w]))`), Count),
					eventsTable("Token errors in the log", "invalid_token|jwt_validation_error", w),
				},
			},
			{
				Title: "Admin actions",
				Checks: []Check{
					eventsTable("Administrative events in the log", "admin_action|privilege_escalation|configuration_change", w),
				},
			},
			{
				Title: "Certificates",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "Leaf certificates",
						Labels: []string{"source_kind", "source", "subject_CN"},
						Order:  ByValueAsc,
						Columns: []Column{
							{Header: "days left", Query: `(x509_cert_not_after{position="leaf"} - time()) / 86400`, Unit: Days},
							{Header: "chain verified", Query: `warden_certs_chain_verified`, Unit: Bool, JoinOn: []string{"source_kind", "source"}},
							{Header: "source read", Query: `warden_certs_source_success`, Unit: Bool, JoinOn: []string{"source_kind", "source"}},
						},
					},
					{
						Type:   Table,
						Title:  "Certificate sources that failed",
						Labels: []string{"source_kind", "source"},
						Columns: []Column{
							{Header: "source read", Query: `warden_certs_source_success == 0`, Unit: Bool},
						},
						Empty: "Every certificate source was read.",
					},
				},
			},
		},
	}
}

func monthly(namespace string) Definition {
	w := "30d"
	x := func(s string) string { return expand(s, w) }
	containers := `namespace=` + strconv.Quote(namespace) + `, container=~"` + services + `"`
	cpu := `sum by (container) (rate(container_cpu_usage_seconds_total{` + containers + `}[1h]))`
	// Memory per pod, the largest one: what compares with the
	// per-container limit (CPU is summed: cores the service uses).
	mem := `max by (container) (container_memory_working_set_bytes{` + containers + `})`
	forecastNote := "Forecast: predict_linear over the last 30 days (a least-squares line through the samples), 30 days ahead; growth per day: deriv over the same range (the same line's slope)."
	return Definition{
		Kind:   Monthly,
		Title:  "Monthly capacity review",
		Window: 30 * day,
		Sections: []Section{
			{
				Title: "Request volume",
				Checks: []Check{
					stat("Requests in 30 days", x(`sum(increase(auth_requests_total[$w]))`), Count),
					{
						Type:   Table,
						Title:  "Requests by service",
						Labels: []string{"job"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "requests", Query: x(`sum by (job) (increase(auth_requests_total[$w]))`), Unit: Count},
							{Header: "peak hourly rate", Query: x(`max_over_time(sum by (job) (rate(auth_requests_total[1h]))[$w:1h])`), Unit: PerSecond},
						},
					},
					{
						Type:   Chart,
						Title:  "Requests per second",
						Note:   "Rate over 6-hour windows.",
						Query:  `sum by (job) (rate(auth_requests_total[6h]))`,
						Unit:   PerSecond,
						Labels: []string{"job"},
						Step:   6 * time.Hour,
					},
				},
			},
			{
				Title: "CPU and memory of the services",
				Intro: "Containers named auth-service and policy-service in namespace " + namespace + ", from cAdvisor and kube-state-metrics. CPU: cores used by all pods of the service (hourly average rate). Memory: working set of the service's largest pod, against the container's limit.",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "CPU",
						Labels: []string{"container"},
						Columns: []Column{
							{Header: "average", Query: x(`avg_over_time(` + cpu + `[$w:1h])`), Unit: Cores},
							{Header: "peak hour", Query: x(`max_over_time(` + cpu + `[$w:1h])`), Unit: Cores},
						},
					},
					{
						Type:   Table,
						Title:  "Memory (working set)",
						Labels: []string{"container"},
						Columns: []Column{
							{Header: "average (largest pod)", Query: x(`avg_over_time(` + mem + `[$w:1h])`), Unit: Bytes},
							{Header: "peak (largest pod)", Query: x(`max_over_time(` + mem + `[$w:1h])`), Unit: Bytes},
							{Header: "limit", Query: `max by (container) (kube_pod_container_resource_limits{` + containers + `, resource="memory"})`, Unit: Bytes},
						},
					},
					{
						Type:   Chart,
						Title:  "Memory working set (largest pod)",
						Query:  mem,
						Unit:   Bytes,
						Labels: []string{"container"},
						Step:   6 * time.Hour,
					},
				},
			},
			{
				Title: "Database growth",
				Intro: forecastNote,
				Checks: []Check{
					{
						Type:   Table,
						Title:  "Databases",
						Labels: []string{"target", "datname"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "size", Query: `pg_database_size_bytes`, Unit: Bytes},
							{Header: "30 days ago", Query: `pg_database_size_bytes offset 30d`, Unit: Bytes},
							{Header: "growth per day", Query: x(`deriv(pg_database_size_bytes[$w]) * 86400`), Unit: Bytes},
							{Header: "forecast in 30 days", Query: x(`predict_linear(pg_database_size_bytes[$w], 30 * 86400)`), Unit: Bytes},
						},
					},
					{
						Type:   Table,
						Title:  "Largest tables",
						Labels: []string{"target", "datname", "schemaname", "relname"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "size", Query: `topk(10, pg_stat_user_tables_size_bytes{relname!="other"})`, Unit: Bytes},
							{Header: "growth per day", Query: x(`deriv(pg_stat_user_tables_size_bytes[$w]) * 86400`), Unit: Bytes},
							{Header: "forecast in 30 days", Query: x(`predict_linear(pg_stat_user_tables_size_bytes[$w], 30 * 86400)`), Unit: Bytes},
						},
					},
					{
						Type:   Chart,
						Title:  "Database size",
						Query:  `sum by (datname) (pg_database_size_bytes)`,
						Unit:   Bytes,
						Labels: []string{"datname"},
						Step:   6 * time.Hour,
					},
				},
			},
			{
				Title: "Redis memory",
				Checks: []Check{
					{
						Type:   Table,
						Title:  "Redis",
						Labels: []string{"target"},
						Columns: []Column{
							{Header: "used", Query: `max by (target) (redis_memory_used_bytes)`, Unit: Bytes},
							{Header: "peak in 30 days", Query: x(`max by (target) (max_over_time(redis_memory_used_bytes[$w]))`), Unit: Bytes},
							{Header: "forecast in 30 days", Query: x(`max by (target) (predict_linear(redis_memory_used_bytes[$w], 30 * 86400))`), Unit: Bytes},
							{Header: "maxmemory (0: no limit)", Query: `max by (target) (redis_memory_max_bytes)`, Unit: Bytes},
						},
					},
					{
						Type:   Chart,
						Title:  "Redis memory used",
						Query:  `max by (target) (redis_memory_used_bytes)`,
						Unit:   Bytes,
						Labels: []string{"target"},
						Step:   6 * time.Hour,
					},
				},
			},
		},
	}
}

func security() Definition {
	w := "30d"
	x := func(s string) string { return expand(s, w) }
	return Definition{
		Kind:   Security,
		Title:  "Monthly security report",
		Window: 30 * day,
		Sections: []Section{
			{
				Title: "Authentication",
				Checks: []Check{
					stat("Login attempts", x(`sum(increase(warden_auth_login_attempts_total[$w]))`), Count),
					stat("Successful logins", x(`sum(increase(warden_auth_login_successes_total[$w]))`), Count),
					stat("Failed logins", x(`sum(increase(warden_auth_login_failures_total[$w]))`), Count),
					{
						Type:  Stat,
						Title: "Success rate",
						Query: x(`sum(increase(warden_auth_login_successes_total[$w])) / (sum(increase(warden_auth_login_attempts_total[$w])) > 0)`),
						Unit:  Ratio,
						Empty: "No login attempt in the window.",
					},
					{
						Type:  Chart,
						Title: "Failed logins per day",
						Query: `sum(increase(warden_auth_login_failures_total[1d]))`,
						Unit:  Count,
						Step:  day,
					},
				},
			},
			{
				Title: "Security events",
				Checks: []Check{
					stat("Blocked sources (ip_blocked events)", x(`sum(increase(warden_auth_events_total{event="ip_blocked"}[$w]))`), Count),
					stat("JWT validation errors (auth-service's counter)", x(`sum(increase(auth_jwt_validation_errors_total[$w]))`), Count),
					stat("Unusual access patterns", x(`sum(increase(warden_auth_events_total{event="unusual_access_pattern"}[$w]))`), Count),
					stat("Privilege escalations", x(`sum(increase(warden_auth_events_total{event="privilege_escalation"}[$w]))`), Count)},
			},
			{
				Title: "System health",
				Checks: []Check{
					{
						Type:  Stat,
						Title: "Average response time",
						Query: x(`sum(increase(auth_request_duration_seconds_sum[$w])) / (sum(increase(auth_request_duration_seconds_count[$w])) > 0)`),
						Unit:  Seconds,
						Empty: "No request in the window.",
					},
					{
						Type:  Stat,
						Title: "Server error (5xx) rate",
						Query: x(`sum(increase(auth_requests_total{status=~"5.."}[$w])) / (sum(increase(auth_requests_total[$w])) > 0)`),
						Unit:  Ratio,
						Empty: "No 5xx answer in the window.",
					},
					{
						Type:   Table,
						Title:  "Availability (share of successful scrapes)",
						Labels: []string{"job"},
						Columns: []Column{
							{Header: "availability", Query: x(`avg by (job) (avg_over_time(up{job=~"` + services + `"}[$w]))`), Unit: Ratio},
						},
					},
				},
			},
			{
				Title: "Incidents",
				Intro: "Pages are alerts with severity critical (deploy/examples/alertmanager.yml routes them to the on-call pager).",
				Checks: []Check{
					alertsCheck("Pages", w, `severity="critical"`),
					{
						Type:   Table,
						Title:  "Escalations by the remediator",
						Labels: []string{"namespace", "target"},
						Order:  ByValueDesc,
						Columns: []Column{
							{Header: "escalations", Query: x(`sum by (namespace, target) (increase(warden_remediator_escalations_total[$w])) > 0`), Unit: Count},
						},
						Empty:           "No escalation.",
						AbsentMeansNone: true,
						Producer:        remediatorProducer,
					},
				},
			},
		},
	}
}

// certificateChecks lists certificates ending within days, and chains
// that do not verify.
func certificateChecks(days int) []Check {
	return []Check{
		{
			Type:   Table,
			Title:  fmt.Sprintf("Certificates expiring within %d days", days),
			Labels: []string{"source_kind", "source", "subject_CN", "position"},
			Order:  ByValueAsc,
			Columns: []Column{
				{Header: "days left", Query: fmt.Sprintf(`(x509_cert_not_after - time()) / 86400 < %d`, days), Unit: Days},
			},
			Empty: fmt.Sprintf("No certificate expires within %d days.", days),
		},
		{
			Type:   Table,
			Title:  "Chains that do not verify",
			Labels: []string{"source_kind", "source"},
			Columns: []Column{
				{Header: "verified", Query: `warden_certs_chain_verified == 0`, Unit: Bool},
			},
			Empty: "Every endpoint's chain verifies.",
		},
	}
}

// alertsCheck lists the alerts that fired in the window. ALERTS only has
// series while an alert is pending or firing, so its absence means none
// fired.
func alertsCheck(title, window, matcher string) Check {
	sel := `ALERTS{alertstate="firing"}`
	if matcher != "" {
		sel = `ALERTS{alertstate="firing", ` + matcher + `}`
	}
	return Check{
		Type:   Table,
		Title:  title,
		Note:   "Alert series that were firing at some point in the window, and the minutes they were firing (sampled once a minute).",
		Labels: []string{"alertname", "severity"},
		Order:  ByValueDesc,
		Columns: []Column{
			{Header: "minutes firing", Query: expand(`sum by (alertname, severity) (count_over_time(`+sel+`[$w:1m]))`, window), Unit: Count},
			{Header: "alert series", Query: expand(`count by (alertname, severity) (max_over_time(`+sel+`[$w]))`, window), Unit: Count},
		},
		Empty:           "No alert fired.",
		AbsentMeansNone: true,
	}
}

// remediatorChecks say what warden-remediator did in the window.
func remediatorChecks(window string) []Check {
	x := func(s string) string { return expand(s, window) }
	return []Check{
		{
			Type:   Table,
			Title:  "Actions",
			Labels: []string{"action", "outcome"},
			Order:  ByValueDesc,
			Columns: []Column{
				{Header: "count", Query: x(`sum by (action, outcome) (increase(warden_remediator_actions_total[$w])) > 0`), Unit: Count},
			},
			Empty: "No action taken.",
		},
		{
			Type:   Table,
			Title:  "Decisions not to act",
			Labels: []string{"reason"},
			Order:  ByValueDesc,
			Columns: []Column{
				{Header: "count", Query: x(`sum by (reason) (increase(warden_remediator_skipped_total[$w])) > 0`), Unit: Count},
			},
			Empty: "No alert declined.",
		},
		{
			Type:   Table,
			Title:  "Escalations to on-call",
			Labels: []string{"namespace", "target"},
			Order:  ByValueDesc,
			Columns: []Column{
				{Header: "count", Query: x(`sum by (namespace, target) (increase(warden_remediator_escalations_total[$w])) > 0`), Unit: Count},
			},
			Empty:           "No escalation.",
			AbsentMeansNone: true,
			Producer:        remediatorProducer,
		},
		{
			Type:   Table,
			Title:  "Circuit breakers open now",
			Labels: []string{"namespace", "target"},
			Columns: []Column{
				{Header: "open", Query: `max by (namespace, target) (warden_remediator_breaker_open) == 1`, Unit: Bool},
			},
			Empty:           "No breaker open.",
			AbsentMeansNone: true,
			Producer:        remediatorProducer,
		},
	}
}

// stat is a check of one number.
func stat(title, query string, unit Unit) Check {
	return Check{Type: Stat, Title: title, Query: query, Unit: unit}
}

// eventsTable counts the auth log's events of the given types
// (warden_auth_events_total) in the window, one row per type.
func eventsTable(title, events, window string) Check {
	return Check{
		Type:   Table,
		Title:  title,
		Labels: []string{"event"},
		Order:  ByValueDesc,
		Columns: []Column{
			{Header: "events", Query: expand(`sum by (event) (increase(warden_auth_events_total{event=~"`+events+`"}[$w]))`, window)},
		},
	}
}
