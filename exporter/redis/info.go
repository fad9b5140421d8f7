package redis

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// redisInfoField maps one field of the INFO reply to a metric. The whole
// mapping lives in redisInfoFields; a field that is not listed there is
// dropped.
type redisInfoField struct {
	// key is the INFO field, e.g. "used_memory".
	key    string
	metric string
	help   string
	vtype  prometheus.ValueType
	// scale converts the reported unit to the metric's base unit
	// (0 means the value is already in base units).
	scale float64
	// status, when set, makes the field a status word: the metric is 1 when
	// the value equals status and 0 for any other word.
	status string
}

// redisInfoFields is the single table from INFO fields to metrics. Names,
// types and units follow redis_exporter, so its dashboards and the runbook's
// queries work unchanged; counters carry _total.
var redisInfoFields = []redisInfoField{
	// Server
	{key: "uptime_in_seconds", metric: "redis_uptime_in_seconds", vtype: prometheus.GaugeValue,
		help: "Seconds since the Redis server started."},

	// Clients
	{key: "connected_clients", metric: "redis_connected_clients", vtype: prometheus.GaugeValue,
		help: "Client connections, excluding replicas."},
	{key: "blocked_clients", metric: "redis_blocked_clients", vtype: prometheus.GaugeValue,
		help: "Clients waiting in a blocking call (BLPOP, XREAD, WAIT...)."},
	{key: "maxclients", metric: "redis_config_maxclients", vtype: prometheus.GaugeValue,
		help: "The maxclients setting: the most client connections the server accepts."},

	// Memory
	{key: "used_memory", metric: "redis_memory_used_bytes", vtype: prometheus.GaugeValue,
		help: "Bytes allocated by Redis's allocator (used_memory)."},
	{key: "used_memory_rss", metric: "redis_memory_used_rss_bytes", vtype: prometheus.GaugeValue,
		help: "Bytes of the server's resident set as seen by the operating system."},
	{key: "used_memory_peak", metric: "redis_memory_used_peak_bytes", vtype: prometheus.GaugeValue,
		help: "Highest used_memory since the server started."},
	{key: "maxmemory", metric: "redis_memory_max_bytes", vtype: prometheus.GaugeValue,
		help: "The maxmemory setting in bytes; 0 means no limit."},
	{key: "mem_fragmentation_ratio", metric: "redis_mem_fragmentation_ratio", vtype: prometheus.GaugeValue,
		help: "Ratio of resident memory to used_memory."},

	// Persistence
	{key: "loading", metric: "redis_loading_dump_file", vtype: prometheus.GaugeValue,
		help: "Whether the server is loading a dump file (1) or not (0)."},
	{key: "rdb_changes_since_last_save", metric: "redis_rdb_changes_since_last_save", vtype: prometheus.GaugeValue,
		help: "Writes since the last RDB save."},
	{key: "rdb_bgsave_in_progress", metric: "redis_rdb_bgsave_in_progress", vtype: prometheus.GaugeValue,
		help: "Whether an RDB background save is running (1) or not (0)."},
	{key: "rdb_last_save_time", metric: "redis_rdb_last_save_timestamp_seconds", vtype: prometheus.GaugeValue,
		help: "Unix time of the last successful RDB save."},
	{key: "rdb_last_bgsave_status", metric: "redis_rdb_last_bgsave_status", vtype: prometheus.GaugeValue, status: "ok",
		help: "Whether the last RDB background save succeeded (1) or failed (0)."},
	// redis_exporter calls this redis_rdb_last_bgsave_duration_sec, which
	// promtool rejects (abbreviated unit).
	{key: "rdb_last_bgsave_time_sec", metric: "redis_rdb_last_bgsave_duration_seconds", vtype: prometheus.GaugeValue,
		help: "Seconds the last RDB background save took; -1 when none has run."},
	{key: "aof_enabled", metric: "redis_aof_enabled", vtype: prometheus.GaugeValue,
		help: "Whether append-only-file persistence is on (1) or off (0)."},

	// Stats
	{key: "total_connections_received", metric: "redis_connections_received_total", vtype: prometheus.CounterValue,
		help: "Connections accepted by the server."},
	{key: "total_commands_processed", metric: "redis_commands_processed_total", vtype: prometheus.CounterValue,
		help: "Commands processed by the server."},
	{key: "total_net_input_bytes", metric: "redis_net_input_bytes_total", vtype: prometheus.CounterValue,
		help: "Bytes read from the network."},
	{key: "total_net_output_bytes", metric: "redis_net_output_bytes_total", vtype: prometheus.CounterValue,
		help: "Bytes written to the network."},
	{key: "rejected_connections", metric: "redis_rejected_connections_total", vtype: prometheus.CounterValue,
		help: "Connections refused because of the maxclients limit."},
	{key: "expired_keys", metric: "redis_expired_keys_total", vtype: prometheus.CounterValue,
		help: "Keys removed because their TTL ran out."},
	{key: "evicted_keys", metric: "redis_evicted_keys_total", vtype: prometheus.CounterValue,
		help: "Keys evicted because of the maxmemory limit."},
	{key: "keyspace_hits", metric: "redis_keyspace_hits_total", vtype: prometheus.CounterValue,
		help: "Successful lookups of keys."},
	{key: "keyspace_misses", metric: "redis_keyspace_misses_total", vtype: prometheus.CounterValue,
		help: "Failed lookups of keys."},
	{key: "pubsub_channels", metric: "redis_pubsub_channels", vtype: prometheus.GaugeValue,
		help: "Pub/sub channels with subscribers."},
	// redis_exporter keeps microseconds here (redis_latest_fork_usec); this
	// one converts to the base unit.
	{key: "latest_fork_usec", metric: "redis_latest_fork_seconds", vtype: prometheus.GaugeValue, scale: 1e-6,
		help: "How long the latest fork (for a save or rewrite) took."},

	// Replication
	{key: "connected_slaves", metric: "redis_connected_slaves", vtype: prometheus.GaugeValue,
		help: "Replicas connected to this server."},
	{key: "master_link_status", metric: "redis_master_link_up", vtype: prometheus.GaugeValue, status: "up",
		help: "On a replica, whether the link to its master is up (1) or down (0)."},
	{key: "master_last_io_seconds_ago", metric: "redis_master_last_io_seconds_ago", vtype: prometheus.GaugeValue,
		help: "On a replica, seconds since the last interaction with its master."},
	{key: "master_sync_in_progress", metric: "redis_master_sync_in_progress", vtype: prometheus.GaugeValue,
		help: "On a replica, whether a full sync from its master is running (1) or not (0)."},
	{key: "master_repl_offset", metric: "redis_master_repl_offset", vtype: prometheus.GaugeValue,
		help: "The server's replication offset."},

	// CPU
	{key: "used_cpu_sys", metric: "redis_cpu_sys_seconds_total", vtype: prometheus.CounterValue,
		help: "System CPU seconds used by the server."},
	{key: "used_cpu_user", metric: "redis_cpu_user_seconds_total", vtype: prometheus.CounterValue,
		help: "User CPU seconds used by the server."},
}

// redisInfoFieldIndex finds a field of redisInfoFields by its INFO key.
var redisInfoFieldIndex = func() map[string]int {
	index := make(map[string]int, len(redisInfoFields))
	for i, f := range redisInfoFields {
		if _, dup := index[f.key]; dup {
			panic("redis INFO field listed twice: " + f.key)
		}
		index[f.key] = i
	}
	return index
}()

// redisDescs are the descriptors of one target's metrics. The target label
// is a constant label of each descriptor, built once per collector, so a
// scrape does not rebuild label pairs for every series.
type redisDescs struct {
	fields                           []*prometheus.Desc // parallel to redisInfoFields
	up, ping, instanceInfo           *prometheus.Desc
	dbKeys, dbKeysExpiring, dbAvgTTL *prometheus.Desc
}

func newRedisDescs(target string) *redisDescs {
	l := prometheus.Labels{"target": target}
	d := &redisDescs{
		fields: make([]*prometheus.Desc, len(redisInfoFields)),
		up: prometheus.NewDesc("redis_up",
			"Whether the last scrape of the Redis server succeeded (1) or not (0).", nil, l),
		ping: prometheus.NewDesc("warden_redis_ping_duration_seconds",
			"Round trip of one PING, including connecting when the pool had no idle connection.", nil, l),
		instanceInfo: prometheus.NewDesc("redis_instance_info",
			"Information about the Redis server; the value is always 1.",
			[]string{"role", "redis_version", "maxmemory_policy"}, l),
		dbKeys: prometheus.NewDesc("redis_db_keys",
			"Keys in the database.", []string{"db"}, l),
		dbKeysExpiring: prometheus.NewDesc("redis_db_keys_expiring",
			"Keys with a TTL in the database.", []string{"db"}, l),
		dbAvgTTL: prometheus.NewDesc("redis_db_avg_ttl_seconds",
			"Estimated average TTL of the database's keys that have one.", []string{"db"}, l),
	}
	for i, f := range redisInfoFields {
		d.fields[i] = prometheus.NewDesc(f.metric, f.help, nil, l)
	}
	return d
}

// redisInfo is what one INFO reply said, restricted to redisInfoFields,
// the instance labels and the keyspace.
type redisInfo struct {
	// values[i] belongs to redisInfoFields[i]; it counts only when set[i].
	values []float64
	set    []bool

	role, version, maxmemoryPolicy string
	dbs                            []redisDBStats

	// invalid lists known fields whose value could not be read; they are
	// left out.
	invalid []string
}

type redisDBStats struct {
	db            string // "db0", as Redis names it
	keys, expires float64
	avgTTLSeconds float64
}

// errRedisInfoEmpty means the reply held nothing that INFO reports.
var errRedisInfoEmpty = errors.New("INFO reply has no known fields")

// parseRedisInfo reads an INFO reply ("field:value" lines grouped under
// "# Section" headers, CRLF or LF line ends). Unknown fields are skipped, a
// field seen twice keeps its last value, and a known field with an
// unreadable value (or a negative counter) is listed in invalid rather than
// failing the whole reply.
func parseRedisInfo(s string) (*redisInfo, error) {
	info := &redisInfo{
		values: make([]float64, len(redisInfoFields)),
		set:    make([]bool, len(redisInfoFields)),
	}
	known := false
	for len(s) > 0 {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		line = strings.TrimSuffix(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		key, value := line[:colon], line[colon+1:]

		switch key {
		case "role":
			info.role, known = redisLabelValue(value), true
			continue
		case "redis_version":
			info.version, known = redisLabelValue(value), true
			continue
		case "maxmemory_policy":
			info.maxmemoryPolicy, known = redisLabelValue(value), true
			continue
		}
		if isRedisDBKey(key) {
			known = true
			db, ok := parseRedisKeyspace(key, value)
			if !ok {
				info.invalid = append(info.invalid, key)
				continue
			}
			info.addDB(db)
			continue
		}
		i, ok := redisInfoFieldIndex[key]
		if !ok {
			continue
		}
		known = true
		f := &redisInfoFields[i]
		var v float64
		if f.status != "" {
			if value == f.status {
				v = 1
			}
		} else {
			v, ok = parseRedisNumber(value)
			if !ok || (v < 0 && f.vtype == prometheus.CounterValue) {
				info.invalid = append(info.invalid, f.key)
				info.set[i] = false
				continue
			}
			if f.scale != 0 {
				v *= f.scale
			}
		}
		info.values[i], info.set[i] = v, true
	}
	if !known {
		return info, errRedisInfoEmpty
	}
	return info, nil
}

// addDB records a keyspace line, replacing an earlier line for the same db
// so that the metrics never repeat a label set.
func (info *redisInfo) addDB(db redisDBStats) {
	for i := range info.dbs {
		if info.dbs[i].db == db.db {
			info.dbs[i] = db
			return
		}
	}
	info.dbs = append(info.dbs, db)
}

// isRedisDBKey reports whether key names a keyspace line ("db" followed by
// the database number).
func isRedisDBKey(key string) bool {
	if len(key) < 3 || len(key) > 7 || key[:2] != "db" {
		return false
	}
	for i := 2; i < len(key); i++ {
		if key[i] < '0' || key[i] > '9' {
			return false
		}
	}
	return true
}

// parseRedisKeyspace reads "keys=70,expires=20,avg_ttl=3599080" (avg_ttl in
// milliseconds). keys is required; the others default to 0.
func parseRedisKeyspace(key, value string) (redisDBStats, bool) {
	db := redisDBStats{db: key}
	sawKeys := false
	for value != "" {
		var item string
		if i := strings.IndexByte(value, ','); i >= 0 {
			item, value = value[:i], value[i+1:]
		} else {
			item, value = value, ""
		}
		eq := strings.IndexByte(item, '=')
		if eq < 0 {
			return db, false
		}
		name := item[:eq]
		switch name {
		case "keys", "expires", "avg_ttl":
		default:
			continue // fields added by later Redis versions
		}
		v, ok := parseRedisNumber(item[eq+1:])
		if !ok || v < 0 {
			return db, false
		}
		switch name {
		case "keys":
			db.keys, sawKeys = v, true
		case "expires":
			db.expires = v
		case "avg_ttl":
			db.avgTTLSeconds = v / 1000
		}
	}
	return db, sawKeys
}

// parseRedisNumber reads an integer or decimal INFO value. Non-finite
// values are refused: Redis never reports them, and a counter of +Inf or
// NaN would only mislead.
func parseRedisNumber(s string) (float64, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return float64(n), true
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// redisLabelValue keeps a label value valid UTF-8 and of sane length
// whatever the server sent.
func redisLabelValue(s string) string {
	const maxLen = 128
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

// emit sends the metrics of a parsed reply.
func (info *redisInfo) emit(ch chan<- prometheus.Metric, d *redisDescs) {
	for i, f := range redisInfoFields {
		if info.set[i] {
			ch <- prometheus.MustNewConstMetric(d.fields[i], f.vtype, info.values[i])
		}
	}
	if info.role != "" || info.version != "" || info.maxmemoryPolicy != "" {
		ch <- prometheus.MustNewConstMetric(d.instanceInfo, prometheus.GaugeValue, 1,
			info.role, info.version, info.maxmemoryPolicy)
	}
	for _, db := range info.dbs {
		ch <- prometheus.MustNewConstMetric(d.dbKeys, prometheus.GaugeValue, db.keys, db.db)
		ch <- prometheus.MustNewConstMetric(d.dbKeysExpiring, prometheus.GaugeValue, db.expires, db.db)
		ch <- prometheus.MustNewConstMetric(d.dbAvgTTL, prometheus.GaugeValue, db.avgTTLSeconds, db.db)
	}
}
