package inventory

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		want    []string
		wantErr string
	}{
		{
			name: "known counter under rate",
			expr: `sum by (namespace, job) (rate(auth_requests_total{status=~"5.."}[5m]))`,
			want: []string{"auth_requests_total"},
		},
		{
			name: "histogram buckets resolve to the histogram",
			expr: `histogram_quantile(0.95, sum by (le) (rate(auth_request_duration_seconds_bucket[5m])))`,
			want: []string{"auth_request_duration_seconds_bucket"},
		},
		{
			name: "several producers in one expression",
			expr: `container_memory_working_set_bytes / on (namespace, pod, container) kube_pod_container_resource_limits{resource="memory"} > 0.9 and on () up{job="auth-service"} == 1`,
			want: []string{"container_memory_working_set_bytes", "kube_pod_container_resource_limits", "up"},
		},
		{
			name: "name given as a __name__ matcher",
			expr: `{__name__="pg_up", target="main"} == 0`,
			want: []string{"pg_up"},
		},
		{
			name: "recording rule",
			expr: `job:auth_request_errors:ratio_rate5m > 0.05`,
			want: []string{"job:auth_request_errors:ratio_rate5m"},
		},
		{
			name:    "misspelt metric",
			expr:    `rate(auth_request_totl[5m])`,
			wantErr: `metric "auth_request_totl" is not produced`,
		},
		{
			name:    "suffix of a non-histogram",
			expr:    `redis_up_count`,
			wantErr: `metric "redis_up_count" is not produced`,
		},
		{
			name:    "rate of a gauge",
			expr:    `rate(redis_memory_used_bytes[5m]) > 0`,
			wantErr: `rate() applied to gauge "redis_memory_used_bytes"`,
		},
		{
			name:    "increase of a gauge",
			expr:    `increase(pg_stat_database_numbackends[5m])`,
			wantErr: `increase() applied to gauge`,
		},
		{
			name:    "regular expression on the name",
			expr:    `{__name__=~"pg_.*"}`,
			wantErr: `matches metric names by =~`,
		},
		{
			name:    "syntax error",
			expr:    `sum(rate(auth_requests_total[5m])`,
			wantErr: `parse`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Check(tt.expr)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Check(%q) = %v, nil; want an error containing %q", tt.expr, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Check(%q) error = %q; want it to contain %q", tt.expr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check(%q): %v", tt.expr, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Check(%q) = %v; want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestLookupHistogramSeries(t *testing.T) {
	for _, name := range []string{"auth_request_duration_seconds_bucket", "auth_request_duration_seconds_sum", "auth_request_duration_seconds_count"} {
		m, ok := Lookup(name)
		if !ok {
			t.Fatalf("Lookup(%q) found nothing", name)
		}
		if m.Type != Counter || m.Source != AuthService || m.Name != name {
			t.Errorf("Lookup(%q) = %+v; want a counter from %s named %s", name, m, AuthService, name)
		}
	}
	if _, ok := Lookup("pg_up_bucket"); ok {
		t.Error("Lookup(pg_up_bucket) found a metric; pg_up is no histogram")
	}
}

// TestInventoryFollowsConventions keeps the list itself honest: valid names,
// _total exactly on counters, base units, a known producer.
func TestInventoryFollowsConventions(t *testing.T) {
	metricName := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	sources := map[Source]bool{Exporter: true, Remediator: true, AuthService: true, Prometheus: true, Recording: true, External: true}
	for _, m := range All() {
		if !metricName.MatchString(m.Name) {
			t.Errorf("%s: not a valid metric name", m.Name)
		}
		if !sources[m.Source] {
			t.Errorf("%s: unknown source %q", m.Name, m.Source)
		}
		if m.Source == Exporter && m.Collector == "" {
			t.Errorf("%s: exporter metric without a collector", m.Name)
		}
		if m.Source == Recording {
			if strings.Count(m.Name, ":") != 2 {
				t.Errorf("%s: recording rule names follow level:metric:operations", m.Name)
			}
			continue
		}
		if strings.Contains(m.Name, ":") {
			t.Errorf("%s: colons are reserved for recording rules", m.Name)
		}
		if m.Source == External || m.Source == AuthService {
			continue // names fixed by others
		}
		if isCounter := m.Type == Counter; isCounter != strings.HasSuffix(m.Name, "_total") {
			t.Errorf("%s: a %s; counters and only counters end in _total", m.Name, m.Type)
		}
		for _, bad := range []string{"_milliseconds", "_ms", "_kilobytes", "_megabytes", "_percent"} {
			if strings.Contains(m.Name, bad) {
				t.Errorf("%s: use base units (seconds, bytes, ratios)", m.Name)
			}
		}
	}
	if len(BySource(Exporter)) == 0 || len(BySource(Remediator)) == 0 || len(BySource(Recording)) == 0 {
		t.Error("inventory lacks exporter, remediator or recording-rule metrics")
	}
}
