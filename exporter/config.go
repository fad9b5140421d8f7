package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
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
	cfg := &Config{Scrape: DefaultScrapeConfig}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %w", err)
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
	if len(c.Postgres) == 0 && len(c.Redis) == 0 && c.Certs == nil && c.Auth == nil {
		return errors.New("no collectors configured: set at least one of postgres, redis, certs, auth")
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
