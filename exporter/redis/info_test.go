package redis

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// redisInfoMetrics exposes one parsed INFO reply as a prometheus.Collector
// (unchecked: it describes nothing), labelled target="t".
type redisInfoMetrics struct{ info *redisInfo }

func (redisInfoMetrics) Describe(chan<- *prometheus.Desc) {}

func (c redisInfoMetrics) Collect(ch chan<- prometheus.Metric) { c.info.emit(ch, newRedisDescs("t")) }

func readRedisFixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return string(b)
}

func TestParseRedisInfoFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		// want is exposition text for the metrics it names; every metric
		// family in it must match exactly.
		want string
		// absent metrics must not appear at all.
		absent  []string
		invalid []string
	}{
		{
			fixture: "redis-info-7.0-master.txt",
			want: `
# HELP redis_instance_info Information about the Redis server; the value is always 1.
# TYPE redis_instance_info gauge
redis_instance_info{maxmemory_policy="allkeys-lru",redis_version="7.0.15",role="master",target="t"} 1
# HELP redis_memory_used_bytes Bytes allocated by Redis's allocator (used_memory).
# TYPE redis_memory_used_bytes gauge
redis_memory_used_bytes{target="t"} 1.116208e+06
# HELP redis_memory_max_bytes The maxmemory setting in bytes; 0 means no limit.
# TYPE redis_memory_max_bytes gauge
redis_memory_max_bytes{target="t"} 2.68435456e+08
# HELP redis_config_maxclients The maxclients setting: the most client connections the server accepts.
# TYPE redis_config_maxclients gauge
redis_config_maxclients{target="t"} 10000
# HELP redis_connected_clients Client connections, excluding replicas.
# TYPE redis_connected_clients gauge
redis_connected_clients{target="t"} 1
# HELP redis_keyspace_hits_total Successful lookups of keys.
# TYPE redis_keyspace_hits_total counter
redis_keyspace_hits_total{target="t"} 30
# HELP redis_keyspace_misses_total Failed lookups of keys.
# TYPE redis_keyspace_misses_total counter
redis_keyspace_misses_total{target="t"} 30
# HELP redis_commands_processed_total Commands processed by the server.
# TYPE redis_commands_processed_total counter
redis_commands_processed_total{target="t"} 154
# HELP redis_rdb_last_bgsave_status Whether the last RDB background save succeeded (1) or failed (0).
# TYPE redis_rdb_last_bgsave_status gauge
redis_rdb_last_bgsave_status{target="t"} 1
# HELP redis_rdb_last_save_timestamp_seconds Unix time of the last successful RDB save.
# TYPE redis_rdb_last_save_timestamp_seconds gauge
redis_rdb_last_save_timestamp_seconds{target="t"} 1.795783301e+09
# HELP redis_latest_fork_seconds How long the latest fork (for a save or rewrite) took.
# TYPE redis_latest_fork_seconds gauge
redis_latest_fork_seconds{target="t"} 0.001322
# HELP redis_cpu_sys_seconds_total System CPU seconds used by the server.
# TYPE redis_cpu_sys_seconds_total counter
redis_cpu_sys_seconds_total{target="t"} 0.014275
# HELP redis_connected_slaves Replicas connected to this server.
# TYPE redis_connected_slaves gauge
redis_connected_slaves{target="t"} 1
# HELP redis_db_keys Keys in the database.
# TYPE redis_db_keys gauge
redis_db_keys{db="db0",target="t"} 70
redis_db_keys{db="db12",target="t"} 1
redis_db_keys{db="db3",target="t"} 7
# HELP redis_db_keys_expiring Keys with a TTL in the database.
# TYPE redis_db_keys_expiring gauge
redis_db_keys_expiring{db="db0",target="t"} 20
redis_db_keys_expiring{db="db12",target="t"} 1
redis_db_keys_expiring{db="db3",target="t"} 0
# HELP redis_db_avg_ttl_seconds Estimated average TTL of the database's keys that have one.
# TYPE redis_db_avg_ttl_seconds gauge
redis_db_avg_ttl_seconds{db="db0",target="t"} 3599.08
redis_db_avg_ttl_seconds{db="db12",target="t"} 89.082
redis_db_avg_ttl_seconds{db="db3",target="t"} 0
`,
			absent: []string{"redis_master_link_up", "redis_master_last_io_seconds_ago", "redis_master_sync_in_progress"},
		},
		{
			fixture: "redis-info-7.0-replica.txt",
			want: `
# HELP redis_instance_info Information about the Redis server; the value is always 1.
# TYPE redis_instance_info gauge
redis_instance_info{maxmemory_policy="noeviction",redis_version="7.0.15",role="slave",target="t"} 1
# HELP redis_master_link_up On a replica, whether the link to its master is up (1) or down (0).
# TYPE redis_master_link_up gauge
redis_master_link_up{target="t"} 1
# HELP redis_master_last_io_seconds_ago On a replica, seconds since the last interaction with its master.
# TYPE redis_master_last_io_seconds_ago gauge
redis_master_last_io_seconds_ago{target="t"} 2
# HELP redis_master_sync_in_progress On a replica, whether a full sync from its master is running (1) or not (0).
# TYPE redis_master_sync_in_progress gauge
redis_master_sync_in_progress{target="t"} 0
# HELP redis_connected_slaves Replicas connected to this server.
# TYPE redis_connected_slaves gauge
redis_connected_slaves{target="t"} 0
# HELP redis_memory_max_bytes The maxmemory setting in bytes; 0 means no limit.
# TYPE redis_memory_max_bytes gauge
redis_memory_max_bytes{target="t"} 0
# HELP redis_db_keys Keys in the database.
# TYPE redis_db_keys gauge
redis_db_keys{db="db0",target="t"} 70
redis_db_keys{db="db12",target="t"} 1
redis_db_keys{db="db3",target="t"} 7
`,
		},
		{
			fixture: "redis-info-malformed.txt",
			want: `
# HELP redis_instance_info Information about the Redis server; the value is always 1.
# TYPE redis_instance_info gauge
redis_instance_info{maxmemory_policy="noeviction",redis_version="6.2.14",role="slave",target="t"} 1
# HELP redis_connected_clients Client connections, excluding replicas.
# TYPE redis_connected_clients gauge
redis_connected_clients{target="t"} 14
# HELP redis_memory_used_bytes Bytes allocated by Redis's allocator (used_memory).
# TYPE redis_memory_used_bytes gauge
redis_memory_used_bytes{target="t"} 1.048576e+06
# HELP redis_mem_fragmentation_ratio Ratio of resident memory to used_memory.
# TYPE redis_mem_fragmentation_ratio gauge
redis_mem_fragmentation_ratio{target="t"} 1.25
# HELP redis_rdb_last_bgsave_status Whether the last RDB background save succeeded (1) or failed (0).
# TYPE redis_rdb_last_bgsave_status gauge
redis_rdb_last_bgsave_status{target="t"} 0
# HELP redis_keyspace_hits_total Successful lookups of keys.
# TYPE redis_keyspace_hits_total counter
redis_keyspace_hits_total{target="t"} 1.8446744073709552e+19
# HELP redis_latest_fork_seconds How long the latest fork (for a save or rewrite) took.
# TYPE redis_latest_fork_seconds gauge
redis_latest_fork_seconds{target="t"} 0.0025
# HELP redis_master_link_up On a replica, whether the link to its master is up (1) or down (0).
# TYPE redis_master_link_up gauge
redis_master_link_up{target="t"} 0
# HELP redis_db_keys Keys in the database.
# TYPE redis_db_keys gauge
redis_db_keys{db="db0",target="t"} 11
redis_db_keys{db="db1",target="t"} 5
redis_db_keys{db="db15",target="t"} 7
# HELP redis_db_keys_expiring Keys with a TTL in the database.
# TYPE redis_db_keys_expiring gauge
redis_db_keys_expiring{db="db0",target="t"} 3
redis_db_keys_expiring{db="db1",target="t"} 0
redis_db_keys_expiring{db="db15",target="t"} 0
# HELP redis_db_avg_ttl_seconds Estimated average TTL of the database's keys that have one.
# TYPE redis_db_avg_ttl_seconds gauge
redis_db_avg_ttl_seconds{db="db0",target="t"} 2.5
redis_db_avg_ttl_seconds{db="db1",target="t"} 0
redis_db_avg_ttl_seconds{db="db15",target="t"} 0
`,
			absent:  []string{"redis_uptime_in_seconds", "redis_blocked_clients", "redis_config_maxclients", "redis_keyspace_misses_total"},
			invalid: []string{"uptime_in_seconds", "blocked_clients", "maxclients", "keyspace_misses", "db2", "db3", "db4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			info, err := parseRedisInfo(readRedisFixture(t, tt.fixture))
			if err != nil {
				t.Fatalf("parseRedisInfo: %v", err)
			}
			if !slices.Equal(info.invalid, tt.invalid) {
				t.Errorf("invalid fields = %q, want %q", info.invalid, tt.invalid)
			}
			c := redisInfoMetrics{info}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want), redisMetricNames(tt.want)...); err != nil {
				t.Error(err)
			}
			got := redisGatherNames(t, c)
			for _, name := range tt.absent {
				if got[name] {
					t.Errorf("%s present, want absent", name)
				}
			}
			for name := range got {
				if !strings.HasPrefix(name, "redis_") {
					t.Errorf("metric %s does not start with redis_", name)
				}
			}
		})
	}
}

// redisMetricNames lists the metric families named in exposition text.
func redisMetricNames(text string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(text, -1) {
		names = append(names, m[1])
	}
	return names
}

// redisGatherNames gathers c and returns the metric family names.
func redisGatherNames(t testing.TB, c prometheus.Collector) map[string]bool {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

func TestParseRedisInfoSameResultForLFAndCRLF(t *testing.T) {
	crlf := readRedisFixture(t, "redis-info-7.0-master.txt")
	if !strings.Contains(crlf, "\r\n") {
		t.Fatal("fixture lost its CRLF line ends (as Redis sends them); check .gitattributes")
	}
	a, errA := parseRedisInfo(crlf)
	b, errB := parseRedisInfo(strings.ReplaceAll(crlf, "\r\n", "\n"))
	if errA != nil || errB != nil {
		t.Fatalf("errors: %v, %v", errA, errB)
	}
	if !slices.Equal(a.values, b.values) || !slices.Equal(a.set, b.set) || !slices.Equal(a.dbs, b.dbs) ||
		a.role != b.role || a.version != b.version || a.maxmemoryPolicy != b.maxmemoryPolicy {
		t.Errorf("CRLF and LF parse differently:\n%+v\n%+v", a, b)
	}
}

func TestParseRedisInfoEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		check   func(t *testing.T, info *redisInfo)
	}{
		{name: "empty", in: "", wantErr: errRedisInfoEmpty},
		{name: "only headers and unknown fields", in: "# Server\r\nfoo:1\r\n\r\n# Keyspace\r\n", wantErr: errRedisInfoEmpty},
		{name: "not INFO at all", in: "-ERR unknown command\r\n", wantErr: errRedisInfoEmpty},
		{
			name: "last line without newline",
			in:   "used_memory:42",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectValue(t, info, "used_memory", 42)
			},
		},
		{
			name: "status words",
			in:   "rdb_last_bgsave_status:ok\nmaster_link_status:up\n",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectValue(t, info, "rdb_last_bgsave_status", 1)
				redisExpectValue(t, info, "master_link_status", 1)
			},
		},
		{
			name: "unexpected status word counts as failure",
			in:   "rdb_last_bgsave_status:OK\nmaster_link_status:\n",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectValue(t, info, "rdb_last_bgsave_status", 0)
				redisExpectValue(t, info, "master_link_status", 0)
			},
		},
		{
			name: "value with colon and spaces is unreadable, not split again",
			in:   "used_memory:1:2\nconnected_clients: 3\n",
			check: func(t *testing.T, info *redisInfo) {
				if !slices.Equal(info.invalid, []string{"used_memory", "connected_clients"}) {
					t.Errorf("invalid = %q", info.invalid)
				}
			},
		},
		{
			name: "a later unreadable duplicate drops the field",
			in:   "used_memory:1\nused_memory:x\n",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectUnset(t, info, "used_memory")
			},
		},
		{
			name: "negative gauge kept, negative counter refused",
			in:   "rdb_last_bgsave_time_sec:-1\nevicted_keys:-1\n",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectValue(t, info, "rdb_last_bgsave_time_sec", -1)
				redisExpectUnset(t, info, "evicted_keys")
			},
		},
		{
			name: "float and exponent forms",
			in:   "used_cpu_sys:1.5e2\nmem_fragmentation_ratio:.5\n",
			check: func(t *testing.T, info *redisInfo) {
				redisExpectValue(t, info, "used_cpu_sys", 150)
				redisExpectValue(t, info, "mem_fragmentation_ratio", 0.5)
			},
		},
		{
			name: "label values are made valid UTF-8 and bounded",
			in:   "role:ma\xffster\nredis_version:" + strings.Repeat("9", 500) + "\n",
			check: func(t *testing.T, info *redisInfo) {
				if info.role != "ma\uFFFDster" {
					t.Errorf("role = %q", info.role)
				}
				if len(info.version) != 128 {
					t.Errorf("version length = %d, want 128", len(info.version))
				}
			},
		},
		{
			name: "keyspace: db name must be db<number>, keys required",
			in:   "db:keys=1\ndb00000000:keys=1\ndb7:keys=1,expires=x\ndb8:expires=1\ndb9:keys=3,unknown\n",
			check: func(t *testing.T, info *redisInfo) {
				if len(info.dbs) != 0 {
					t.Errorf("dbs = %+v, want none", info.dbs)
				}
				if !slices.Equal(info.invalid, []string{"db7", "db8", "db9"}) {
					t.Errorf("invalid = %q", info.invalid)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := parseRedisInfo(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if info == nil {
				t.Fatal("nil info")
			}
			if tt.check != nil {
				tt.check(t, info)
			}
		})
	}
}

func redisExpectValue(t *testing.T, info *redisInfo, key string, want float64) {
	t.Helper()
	i := redisInfoFieldIndex[key]
	if !info.set[i] {
		t.Errorf("%s not set, want %g", key, want)
		return
	}
	if got := info.values[i]; got != want {
		t.Errorf("%s = %g, want %g", key, got, want)
	}
}

func redisExpectUnset(t *testing.T, info *redisInfo, key string) {
	t.Helper()
	if i := redisInfoFieldIndex[key]; info.set[i] {
		t.Errorf("%s = %g, want unset", key, info.values[i])
	}
}

// TestRedisInfoFieldTable checks the table's own consistency: one metric
// per name, counters and only counters end in _total, help on every entry.
func TestRedisInfoFieldTable(t *testing.T) {
	nameRE := regexp.MustCompile(`^redis_[a-z0-9_]+$`)
	seen := map[string]string{}
	for _, f := range redisInfoFields {
		if prev, dup := seen[f.metric]; dup {
			t.Errorf("%s used by %s and %s", f.metric, prev, f.key)
		}
		seen[f.metric] = f.key
		if !nameRE.MatchString(f.metric) {
			t.Errorf("%s: bad metric name %q", f.key, f.metric)
		}
		if isCounter := f.vtype == prometheus.CounterValue; isCounter != strings.HasSuffix(f.metric, "_total") {
			t.Errorf("%s: counter=%v but name %q", f.key, isCounter, f.metric)
		}
		if f.help == "" {
			t.Errorf("%s: missing help or desc", f.key)
		}
		if f.status != "" && f.scale != 0 {
			t.Errorf("%s: a status word cannot be scaled", f.key)
		}
	}
	for _, m := range []string{"redis_instance_info", "redis_db_keys", "redis_db_keys_expiring", "redis_db_avg_ttl_seconds", "redis_up", "warden_redis_ping_duration_seconds"} {
		if key, dup := seen[m]; dup {
			t.Errorf("%s is both in the field table (%s) and emitted separately", m, key)
		}
	}
}

func FuzzParseRedisInfo(f *testing.F) {
	for _, name := range []string{"redis-info-7.0-master.txt", "redis-info-7.0-replica.txt", "redis-info-malformed.txt"} {
		f.Add(readRedisFixture(f, name))
	}
	f.Add("db0:keys=1,expires=1,avg_ttl=1\r\ndb0:keys=2\r\n")
	f.Add("role:\xff\xfe\nused_memory:1e400\nevicted_keys:-0\n")
	f.Fuzz(func(t *testing.T, in string) {
		info, err := parseRedisInfo(in)
		if info == nil {
			t.Fatalf("nil info (err %v)", err)
		}
		for i, v := range info.values {
			if info.set[i] && (math.IsNaN(v) || math.IsInf(v, 0)) {
				t.Fatalf("%s = %g", redisInfoFields[i].key, v)
			}
		}
		// Whatever was parsed must be exposable: valid label values and no
		// repeated series (Gather fails on either).
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(redisInfoMetrics{info})
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		for _, mf := range mfs {
			if mf.GetType() == dto.MetricType_COUNTER {
				for _, m := range mf.GetMetric() {
					if m.GetCounter().GetValue() < 0 {
						t.Fatalf("%s negative", mf.GetName())
					}
				}
			}
		}
	})
}

// TestRedisMetricsAreDocumented keeps docs/metrics.md in step with the
// field table.
func TestRedisMetricsAreDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	names := []string{"redis_up", "warden_redis_ping_duration_seconds", "redis_instance_info",
		"redis_db_keys", "redis_db_keys_expiring", "redis_db_avg_ttl_seconds"}
	for _, f := range redisInfoFields {
		names = append(names, f.metric)
	}
	for _, name := range names {
		if !strings.Contains(doc, "| `"+name+"` |") {
			t.Errorf("docs/metrics.md has no row for %s", name)
		}
	}
}
