package remediator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/remediator/actions"
)

// Policy is the remediator's configuration file: which alerts lead to which
// actions, on which targets, under which safety limits.
type Policy struct {
	// Mode is first_match (the first matching rule acts) or all_matches.
	Mode string `yaml:"mode"`
	// DryRun evaluates and records every decision but changes nothing.
	DryRun    bool            `yaml:"dry_run"`
	Defaults  Defaults        `yaml:"defaults"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	Breaker   BreakerConfig   `yaml:"breaker"`
	Redis     []RedisTarget   `yaml:"redis"`
	Rules     []Rule          `yaml:"rules"`
}

// Policy modes.
const (
	ModeFirstMatch = "first_match"
	ModeAllMatches = "all_matches"
)

// Defaults apply to rules that do not set their own value.
type Defaults struct {
	// Cooldown is the minimum time between two actions on one target.
	Cooldown time.Duration `yaml:"cooldown"`
	// Timeout bounds one action, retries included.
	Timeout time.Duration `yaml:"timeout"`
	// RetryFor bounds how long a queued job keeps retrying when the
	// coordination store (Kubernetes API, Redis) cannot be reached.
	RetryFor time.Duration `yaml:"retry_for"`
}

// RateLimitConfig caps actions across all targets.
type RateLimitConfig struct {
	// ActionsPerHour is a sliding one-hour window per replica; 0 means no
	// limit.
	ActionsPerHour int `yaml:"actions_per_hour"`
}

// BreakerConfig says when the circuit breaker of a target opens.
type BreakerConfig struct {
	// Failures is the number of failed actions on a target within Window
	// that opens the breaker.
	Failures int `yaml:"failures"`
	// Refires is the number of times an alert fires again after it was
	// remediated, within Window, that opens the breaker.
	Refires int `yaml:"refires"`
	// Window is the period over which failures and refires are counted.
	Window time.Duration `yaml:"window"`
	// OpenFor is how long an open breaker refuses actions.
	OpenFor time.Duration `yaml:"open_for"`
}

// RedisTarget is a Redis database that flush-cache rules may clear.
type RedisTarget struct {
	Name         string `yaml:"name"`
	Address      string `yaml:"address"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          bool   `yaml:"tls"`
	DB           int    `yaml:"db"`
	// Enabled must be true for flush-cache to run against this target;
	// otherwise every flush is refused and recorded.
	Enabled bool `yaml:"enabled"`
	// CoordinationDB holds the remediator's own state for this target
	// (dedupe, cooldown, breaker). It must differ from DB, which the flush
	// clears.
	CoordinationDB int `yaml:"coordination_db"`

	password string
}

// Rule maps matching alerts to one action.
type Rule struct {
	Name     string         `yaml:"name"`
	Matchers []string       `yaml:"matchers"`
	Action   actions.Kind   `yaml:"action"`
	Target   TargetTemplate `yaml:"target"`
	Allow    Allowlist      `yaml:"allow"`
	DryRun   bool           `yaml:"dry_run"`
	Cooldown time.Duration  `yaml:"cooldown"`
	Timeout  time.Duration  `yaml:"timeout"`
	Params   Params         `yaml:"params"`

	compiled *compiledRule
}

// TargetTemplate names the target with text/template over the alert
// (.Labels, .Annotations, .Fingerprint).
type TargetTemplate struct {
	Namespace  string `yaml:"namespace"`
	Deployment string `yaml:"deployment"`
	Pod        string `yaml:"pod"`
	Redis      string `yaml:"redis"`
}

// Allowlist is the set of names a rule may act on. It comes from the policy
// only; a rendered name outside it is refused.
type Allowlist struct {
	Namespaces   []string `yaml:"namespaces"`
	Deployments  []string `yaml:"deployments"`
	RedisTargets []string `yaml:"redis_targets"`
}

// Params are action-specific settings.
type Params struct {
	// scale
	Replicas    *int32 `yaml:"replicas"`
	Delta       *int32 `yaml:"delta"`
	MinReplicas int32  `yaml:"min_replicas"`
	MaxReplicas int32  `yaml:"max_replicas"`
	// recycle
	MaxFraction float64 `yaml:"max_fraction"`
	// reload
	Scheme string `yaml:"scheme"`
	Port   int    `yaml:"port"`
	Path   string `yaml:"path"`
	Method string `yaml:"method"`
}

// DefaultPolicy holds the values used for fields a policy file leaves out.
var DefaultPolicy = Policy{
	Mode: ModeFirstMatch,
	Defaults: Defaults{
		Cooldown: 10 * time.Minute,
		Timeout:  2 * time.Minute,
		RetryFor: 15 * time.Minute,
	},
	RateLimit: RateLimitConfig{ActionsPerHour: 20},
	Breaker: BreakerConfig{
		Failures: 3,
		Refires:  3,
		Window:   time.Hour,
		OpenFor:  time.Hour,
	},
}

// LoadPolicy reads, validates and compiles a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy decodes a policy strictly (unknown fields are errors), applies
// defaults, reads password files and validates it.
func ParsePolicy(b []byte) (*Policy, error) {
	return parsePolicy(b, slog.New(slog.DiscardHandler))
}

func parsePolicy(b []byte, logger *slog.Logger) (*Policy, error) {
	p := DefaultPolicy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	if err := p.compile(logger); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return &p, nil
}

func (p *Policy) validate() error {
	switch p.Mode {
	case ModeFirstMatch, ModeAllMatches:
	default:
		return fmt.Errorf("mode: must be %s or %s, got %q", ModeFirstMatch, ModeAllMatches, p.Mode)
	}
	if p.Defaults.Cooldown < 0 {
		return errors.New("defaults.cooldown: must not be negative")
	}
	if p.Defaults.Timeout <= 0 {
		return errors.New("defaults.timeout: must be positive")
	}
	if p.Defaults.RetryFor <= 0 {
		return errors.New("defaults.retry_for: must be positive")
	}
	if p.RateLimit.ActionsPerHour < 0 {
		return errors.New("rate_limit.actions_per_hour: must not be negative (0 means no limit)")
	}
	b := p.Breaker
	if b.Failures < 1 {
		return errors.New("breaker.failures: must be at least 1")
	}
	if b.Refires < 1 {
		return errors.New("breaker.refires: must be at least 1")
	}
	if b.Window <= 0 {
		return errors.New("breaker.window: must be positive")
	}
	if b.OpenFor <= 0 {
		return errors.New("breaker.open_for: must be positive")
	}
	redisNames := map[string]bool{}
	for i := range p.Redis {
		r := &p.Redis[i]
		path := fmt.Sprintf("redis[%d]", i)
		if r.Name == "" {
			return fmt.Errorf("%s.name: required", path)
		}
		if redisNames[r.Name] {
			return fmt.Errorf("%s.name: %q is already used", path, r.Name)
		}
		redisNames[r.Name] = true
		if r.Address == "" || !strings.Contains(r.Address, ":") {
			return fmt.Errorf("%s.address: must be host:port, got %q", path, r.Address)
		}
		if r.DB < 0 || r.DB > 15 {
			return fmt.Errorf("%s.db: must be between 0 and 15", path)
		}
		if r.CoordinationDB < 0 || r.CoordinationDB > 15 {
			return fmt.Errorf("%s.coordination_db: must be between 0 and 15", path)
		}
		if r.CoordinationDB == r.DB {
			return fmt.Errorf("%s.coordination_db: must differ from db %d (the flush would erase the remediator's own records)", path, r.DB)
		}
		if r.PasswordFile != "" {
			pw, err := os.ReadFile(r.PasswordFile)
			if err != nil {
				return fmt.Errorf("%s.password_file: %w", path, err)
			}
			r.password = strings.TrimRight(string(pw), "\r\n")
		}
	}
	ruleNames := map[string]bool{}
	for i := range p.Rules {
		r := &p.Rules[i]
		path := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			return fmt.Errorf("%s.name: required", path)
		}
		if ruleNames[r.Name] {
			return fmt.Errorf("%s.name: %q is already used", path, r.Name)
		}
		ruleNames[r.Name] = true
		if err := r.validate(path, redisNames); err != nil {
			return err
		}
	}
	return nil
}

func (r *Rule) validate(path string, redisNames map[string]bool) error {
	if len(r.Matchers) == 0 {
		return fmt.Errorf("%s.matchers: at least one matcher is required", path)
	}
	if r.Cooldown < 0 {
		return fmt.Errorf("%s.cooldown: must not be negative", path)
	}
	if r.Timeout < 0 {
		return fmt.Errorf("%s.timeout: must not be negative", path)
	}
	needKube := func() error {
		if r.Target.Namespace == "" {
			return fmt.Errorf("%s.target.namespace: required for action %s", path, r.Action)
		}
		if r.Target.Deployment == "" {
			return fmt.Errorf("%s.target.deployment: required for action %s", path, r.Action)
		}
		if len(r.Allow.Namespaces) == 0 {
			return fmt.Errorf("%s.allow.namespaces: required for action %s (the policy, not the alert, names the namespaces)", path, r.Action)
		}
		if len(r.Allow.Deployments) == 0 {
			return fmt.Errorf("%s.allow.deployments: required for action %s", path, r.Action)
		}
		if r.Target.Redis != "" || len(r.Allow.RedisTargets) > 0 {
			return fmt.Errorf("%s: redis target settings are only valid for action %s", path, actions.FlushCache)
		}
		return nil
	}
	switch r.Action {
	case actions.Restart:
		return needKube()
	case actions.Scale:
		if err := needKube(); err != nil {
			return err
		}
		pr := r.Params
		if (pr.Replicas == nil) == (pr.Delta == nil) {
			return fmt.Errorf("%s.params: set exactly one of replicas or delta", path)
		}
		if pr.MaxReplicas < 1 {
			return fmt.Errorf("%s.params.max_replicas: must be at least 1", path)
		}
		if pr.MinReplicas < 0 || pr.MinReplicas > pr.MaxReplicas {
			return fmt.Errorf("%s.params.min_replicas: must be between 0 and max_replicas", path)
		}
		if pr.Replicas != nil && (*pr.Replicas < pr.MinReplicas || *pr.Replicas > pr.MaxReplicas) {
			return fmt.Errorf("%s.params.replicas: must be between min_replicas and max_replicas", path)
		}
		if pr.Delta != nil && *pr.Delta == 0 {
			return fmt.Errorf("%s.params.delta: must not be 0", path)
		}
	case actions.Recycle:
		if err := needKube(); err != nil {
			return err
		}
		if r.Target.Pod == "" {
			return fmt.Errorf("%s.target.pod: required for action %s", path, r.Action)
		}
		if r.Params.MaxFraction == 0 {
			r.Params.MaxFraction = 0.25
		}
		if r.Params.MaxFraction < 0 || r.Params.MaxFraction > 1 {
			return fmt.Errorf("%s.params.max_fraction: must be in (0, 1]", path)
		}
	case actions.Reload:
		if err := needKube(); err != nil {
			return err
		}
		pr := &r.Params
		if pr.Port < 1 || pr.Port > 65535 {
			return fmt.Errorf("%s.params.port: must be between 1 and 65535", path)
		}
		if pr.Scheme == "" {
			pr.Scheme = "http"
		}
		if pr.Scheme != "http" && pr.Scheme != "https" {
			return fmt.Errorf("%s.params.scheme: must be http or https", path)
		}
		if pr.Path == "" {
			pr.Path = "/-/reload"
		}
		if !strings.HasPrefix(pr.Path, "/") {
			return fmt.Errorf("%s.params.path: must start with /", path)
		}
		if pr.Method == "" {
			pr.Method = "POST"
		}
		if pr.Method != "POST" && pr.Method != "PUT" && pr.Method != "GET" {
			return fmt.Errorf("%s.params.method: must be POST, PUT or GET", path)
		}
	case actions.FlushCache:
		if r.Target.Redis == "" {
			return fmt.Errorf("%s.target.redis: required for action %s", path, r.Action)
		}
		if len(r.Allow.RedisTargets) == 0 {
			return fmt.Errorf("%s.allow.redis_targets: required for action %s", path, r.Action)
		}
		for j, n := range r.Allow.RedisTargets {
			if !redisNames[n] {
				return fmt.Errorf("%s.allow.redis_targets[%d]: %q is not a configured redis target", path, j, n)
			}
		}
		if r.Target.Namespace != "" || r.Target.Deployment != "" || r.Target.Pod != "" {
			return fmt.Errorf("%s.target: only redis is valid for action %s", path, r.Action)
		}
	case "":
		return fmt.Errorf("%s.action: required", path)
	default:
		return fmt.Errorf("%s.action: unknown action %q (want restart, scale, recycle, flush-cache or reload)", path, r.Action)
	}
	return nil
}

// redisTarget returns the configured Redis target with the given name.
func (p *Policy) redisTarget(name string) (*RedisTarget, bool) {
	for i := range p.Redis {
		if p.Redis[i].Name == name {
			return &p.Redis[i], true
		}
	}
	return nil, false
}
