package authevents

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/internal/secret"
)

// Config configures the auth collector: where auth-service's JSON log
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

	// SuccessAfterFailures is the run of failed logins (for one username,
	// or from one source) that makes the next success count in
	// warden_auth_success_after_failures_total.
	SuccessAfterFailures int `yaml:"success_after_failures"`
	// BruteForceMinFailures and BruteForceMaxUsers: a tracked source with
	// at least that many failures in the window on at most that many
	// usernames is brute-forcing.
	BruteForceMinFailures int `yaml:"brute_force_min_failures"`
	BruteForceMaxUsers    int `yaml:"brute_force_max_users"`
	// SprayingMinUsers and SprayingMaxFailuresPerUser: a tracked source
	// failing for at least that many usernames, with at most that many
	// failures per username on average, is spraying passwords.
	SprayingMinUsers           int     `yaml:"spraying_min_users"`
	SprayingMaxFailuresPerUser float64 `yaml:"spraying_max_failures_per_user"`
	// PatternMinFailureRatio is the share of a source's logins in the
	// window that must have failed for either pattern (a NAT of many
	// people mostly succeeds).
	PatternMinFailureRatio float64 `yaml:"pattern_min_failure_ratio"`
	// Stuffing*: credential stuffing is failed logins from at least
	// StuffingMinSources sources for at least StuffingMinUsers usernames
	// while at most StuffingMaxSuccessRatio of the window's logins succeed.
	StuffingMinSources      int     `yaml:"stuffing_min_sources"`
	StuffingMinUsers        int     `yaml:"stuffing_min_users"`
	StuffingMaxSuccessRatio float64 `yaml:"stuffing_max_success_ratio"`
	// RiskScoreBuckets are the upper bounds of warden_auth_risk_score.
	RiskScoreBuckets []float64 `yaml:"risk_score_buckets"`
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
	// UserID is hashed into sketches, never exposed.
	UserID    string `yaml:"user_id"`
	RiskScore string `yaml:"risk_score"`
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
		Fields:       FieldsConfig{Event: "event", IPAddress: "ip_address", Timestamp: "timestamp", UserID: "user_id", RiskScore: "risk_score"},
		TopK:         authDefaultTopK,
		Window:       authDefaultWindow,

		SuccessAfterFailures:       5,
		BruteForceMinFailures:      20,
		BruteForceMaxUsers:         3,
		SprayingMinUsers:           20,
		SprayingMaxFailuresPerUser: 3,
		PatternMinFailureRatio:     0.5,
		StuffingMinSources:         500,
		StuffingMinUsers:           2000,
		StuffingMaxSuccessRatio:    0.5,
		RiskScoreBuckets:           []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1},
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
	fieldNames := []string{"event", "ip_address", "timestamp", "user_id", "risk_score"}
	used := map[string]string{}
	for i, v := range []string{f.Event, f.IPAddress, f.Timestamp, f.UserID, f.RiskScore} {
		if v == "" {
			return fmt.Errorf("%s.fields.%s: must not be empty", path, fieldNames[i])
		}
		if other, ok := used[v]; ok {
			return fmt.Errorf("%s.fields.%s: names the same field %q as fields.%s; each must name a different field", path, fieldNames[i], v, other)
		}
		used[v] = fieldNames[i]
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
	if err := c.validateSignals(path); err != nil {
		return err
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

// validateSignals checks the attack signals' thresholds.
func (c *Config) validateSignals(path string) error {
	ints := []struct {
		name      string
		v, lo, hi int
	}{
		{"success_after_failures", c.SuccessAfterFailures, 1, 1_000_000},
		{"brute_force_min_failures", c.BruteForceMinFailures, 1, 1_000_000},
		{"brute_force_max_users", c.BruteForceMaxUsers, 1, 1000},
		{"spraying_min_users", c.SprayingMinUsers, 2, 1_000_000},
		{"stuffing_min_sources", c.StuffingMinSources, 2, 100_000_000},
		{"stuffing_min_users", c.StuffingMinUsers, 2, 100_000_000},
	}
	for _, f := range ints {
		if f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("%s.%s: must be between %d and %d, got %d", path, f.name, f.lo, f.hi, f.v)
		}
	}
	if c.BruteForceMaxUsers >= c.SprayingMinUsers {
		return fmt.Errorf("%s.brute_force_max_users: must be less than spraying_min_users (%d), got %d", path, c.SprayingMinUsers, c.BruteForceMaxUsers)
	}
	if v := c.SprayingMaxFailuresPerUser; math.IsNaN(v) || v < 1 || v > 1000 {
		return fmt.Errorf("%s.spraying_max_failures_per_user: must be between 1 and 1000, got %v", path, v)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"pattern_min_failure_ratio", c.PatternMinFailureRatio}, {"stuffing_max_success_ratio", c.StuffingMaxSuccessRatio}} {
		if math.IsNaN(f.v) || f.v < 0 || f.v > 1 {
			return fmt.Errorf("%s.%s: must be between 0 and 1, got %v", path, f.name, f.v)
		}
	}
	if n := len(c.RiskScoreBuckets); n == 0 || n > 100 {
		return fmt.Errorf("%s.risk_score_buckets: must have between 1 and 100 bounds, got %d", path, n)
	}
	for i, v := range c.RiskScoreBuckets {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s.risk_score_buckets[%d]: must be a finite number, got %v", path, i, v)
		}
		if i > 0 && v <= c.RiskScoreBuckets[i-1] {
			return fmt.Errorf("%s.risk_score_buckets[%d]: bounds must increase, %v follows %v", path, i, v, c.RiskScoreBuckets[i-1])
		}
	}
	return nil
}
