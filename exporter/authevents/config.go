package authevents

import (
	"fmt"
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
