package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/exporter/authevents"
	"github.com/warden-sre/warden/exporter/certs"
	"github.com/warden-sre/warden/exporter/postgres"
	"github.com/warden-sre/warden/exporter/redis"
)

// Config is the exporter's configuration file.
// Each backend's section is that backend's own configuration type, with
// its defaults (applied while decoding) and its validation.
type Config struct {
	Scrape     ScrapeConfig       `yaml:"scrape"`
	Kubernetes KubernetesConfig   `yaml:"kubernetes"`
	Postgres   []postgres.Target  `yaml:"postgres"`
	Redis      []redis.Target     `yaml:"redis"`
	Certs      *certs.Config      `yaml:"certs"`
	Auth       *authevents.Config `yaml:"auth"`
	// Modules are the ways /probe may scrape a target named in its URL.
	Modules map[string]Module `yaml:"modules"`
	Probe   ProbeConfig       `yaml:"probe"`
}

// ScrapeConfig bounds how long one scrape may take.
type ScrapeConfig struct {
	// DefaultTimeout applies when Prometheus sends no
	// X-Prometheus-Scrape-Timeout-Seconds header.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// TimeoutOffset is subtracted from Prometheus's timeout so the answer
	// arrives before Prometheus gives up.
	TimeoutOffset time.Duration `yaml:"timeout_offset"`
	// MaxTimeout caps the deadline whatever the header says.
	MaxTimeout time.Duration `yaml:"max_timeout"`
}

// KubernetesConfig says how collectors that read from the Kubernetes API
// (certificate Secrets, auth-service pod logs) reach it.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster configuration.
	Kubeconfig string `yaml:"kubeconfig"`
}

// DefaultScrapeConfig is used for fields the file leaves out.
var DefaultScrapeConfig = ScrapeConfig{
	DefaultTimeout: 10 * time.Second,
	TimeoutOffset:  500 * time.Millisecond,
	MaxTimeout:     60 * time.Second,
}

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes a configuration strictly (unknown fields are errors),
// applies defaults and validates it.
func ParseConfig(b []byte) (*Config, error) {
	cfg := &Config{Scrape: DefaultScrapeConfig, Probe: DefaultProbeConfig}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %s", redactDecodeError(err.Error(), b))
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

func (c *Config) validate() error {
	s := c.Scrape
	if s.DefaultTimeout <= 0 {
		return errors.New("scrape.default_timeout: must be positive")
	}
	if s.TimeoutOffset < 0 {
		return errors.New("scrape.timeout_offset: must not be negative")
	}
	if s.MaxTimeout < s.DefaultTimeout {
		return errors.New("scrape.max_timeout: must be at least scrape.default_timeout")
	}
	// An empty file is a mistake, not a wish to export nothing: loaded by a
	// reload it would drop every target, and with them pg_up and redis_up,
	// so the alerts on those could no longer fire.
	if len(c.Postgres) == 0 && len(c.Redis) == 0 && c.Certs == nil && c.Auth == nil && len(c.Modules) == 0 {
		return errors.New("no collectors configured: set at least one of postgres, redis, certs, auth, modules")
	}
	if err := c.Probe.validate(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		if !moduleName.MatchString(name) {
			return fmt.Errorf("modules.%s: a module name is letters, digits, '_', '.' and '-'", name)
		}
		m := c.Modules[name]
		if err := m.validate("modules."+name, c.Probe); err != nil {
			return err
		}
	}
	names := map[string]string{}
	unique := func(kind, name, path string) error {
		if name == "" {
			return fmt.Errorf("%s.name: required", path)
		}
		key := kind + "/" + name
		if prev, ok := names[key]; ok {
			return fmt.Errorf("%s.name: %q is already used by %s", path, name, prev)
		}
		names[key] = path
		return nil
	}
	for i := range c.Postgres {
		path := fmt.Sprintf("postgres[%d]", i)
		if err := unique("postgres", c.Postgres[i].Name, path); err != nil {
			return err
		}
		if err := c.Postgres[i].Validate(path); err != nil {
			return err
		}
	}
	if err := postgres.CheckQueryMetrics("postgres", c.Postgres); err != nil {
		return err
	}
	for i := range c.Redis {
		path := fmt.Sprintf("redis[%d]", i)
		if err := unique("redis", c.Redis[i].Name, path); err != nil {
			return err
		}
		if err := c.Redis[i].Validate(path); err != nil {
			return err
		}
	}
	if c.Certs != nil {
		if err := c.Certs.Validate("certs"); err != nil {
			return err
		}
	}
	if c.Auth != nil {
		if err := c.Auth.Validate("auth"); err != nil {
			return err
		}
	}
	return nil
}

var (
	// yamlTypeErrorValue is the value quoted in the decoder's "cannot
	// unmarshal !!str `value` into type" (cut to 7 characters and "..." past
	// 10, in full up to 10: a whole short password).
	yamlTypeErrorValue = regexp.MustCompile("cannot unmarshal ([^ ]+?)(?: `.*?`)? into ")
	// yamlStandardTag is a tag the decoder resolves itself; any other tag
	// is text from the file (a password starting with '!').
	yamlStandardTag = regexp.MustCompile(`^!!(str|int|float|bool|null|map|seq|timestamp|binary|merge)$`)
	// yamlUnknownAnchor names an alias without its anchor: a password
	// written unquoted and starting with '*'.
	yamlUnknownAnchor = regexp.MustCompile(`unknown anchor '.*?' referenced`)
	// yamlFieldNotFound names a mapping key that is not a field.
	yamlFieldNotFound = regexp.MustCompile(`field (.+?) not found in type `)
	// secretKey is a mapping key whose value holds or may hold a credential.
	secretKey = regexp.MustCompile(`(?i)pass|secret|token|dsn|user|cred|address`)
)

// redactDecodeError removes from a YAML decoder error every value that
// could be a credential: a password written where the decoder wants
// something else ends up quoted in its message. The value a type error
// quotes is dropped whatever its field (a credential may be in the wrong
// place); keys and values found under a credential's key in the raw file
// are masked wherever they appear. The line numbers stay, so the error
// still says where to look.
func redactDecodeError(msg string, raw []byte) string {
	msg = yamlTypeErrorValue.ReplaceAllStringFunc(msg, func(m string) string {
		if tag := yamlTypeErrorValue.FindStringSubmatch(m)[1]; yamlStandardTag.MatchString(tag) {
			return "cannot unmarshal " + tag + " value into "
		}
		return "cannot unmarshal a value with a custom tag into "
	})
	msg = yamlUnknownAnchor.ReplaceAllString(msg, "unknown anchor referenced (quote a value that starts with '*')")
	secrets := map[string]bool{}
	var root yaml.Node
	if yaml.Unmarshal(raw, &root) == nil {
		collectSecretScalars(&root, false, secrets)
	}
	msg = yamlFieldNotFound.ReplaceAllStringFunc(msg, func(m string) string {
		if secrets[yamlFieldNotFound.FindStringSubmatch(m)[1]] {
			return "field <redacted> not found in type "
		}
		return m
	})
	for s := range secrets {
		// Shorter values would mask line numbers and type names; they only
		// appear in the two forms handled above.
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "<redacted>")
		}
	}
	return msg
}

// collectSecretScalars adds to out every scalar (key or value) in the
// subtree of n that lies under a credential's key.
func collectSecretScalars(n *yaml.Node, underSecret bool, out map[string]bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		if underSecret {
			out[n.Value] = true
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			secret := underSecret || secretKey.MatchString(k.Value)
			if underSecret {
				out[k.Value] = true
			}
			collectSecretScalars(v, secret, out)
		}
	default:
		for _, c := range n.Content {
			collectSecretScalars(c, underSecret, out)
		}
	}
}
