package remediator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/warden-sre/warden/internal/secret"
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
	// Verify, Gates and Freezes are described in verify.go and gates.go.
	Verify  VerifyConfig `yaml:"verify"`
	Gates   GatesConfig  `yaml:"gates"`
	Freezes []Freeze     `yaml:"freezes"`
	// Approvals: how long a proposed action waits for a person
	// (approval.go).
	Approvals ApprovalsConfig `yaml:"approvals"`
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
	// MaxDelay: a job that waited longer than this since it was received
	// acts only if the alert is confirmed to be still firing.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// RateLimitConfig caps actions across all targets.
type RateLimitConfig struct {
	// ActionsPerHour is a sliding one-hour window over all replicas; 0
	// means no limit.
	ActionsPerHour int `yaml:"actions_per_hour"`
	// MaxTargetsPerNamespace caps the distinct targets acted on in one
	// namespace within the hour; 0 means no limit.
	MaxTargetsPerNamespace int `yaml:"max_targets_per_namespace"`
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
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	// PasswordFile is read when the policy is loaded or reloaded.
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

// Rule maps matching alerts to one action. The action's parameters sit in
// the block named after it; a block for another action is an error.
type Rule struct {
	Name     string         `yaml:"name"`
	Matchers []string       `yaml:"matchers"`
	Action   actions.Kind   `yaml:"action"`
	Target   TargetTemplate `yaml:"target"`
	Allow    Allowlist      `yaml:"allow"`
	DryRun   bool           `yaml:"dry_run"`
	Cooldown time.Duration  `yaml:"cooldown"`
	Timeout  time.Duration  `yaml:"timeout"`
	// BlockWhen: while an alert matching any of these matcher sets fires,
	// the rule does not act.
	BlockWhen [][]string `yaml:"block_when"`
	// Approval is "required" (a person approves each action before it
	// runs) or "none"; the default is required for block-source and none
	// for the other actions.
	Approval string `yaml:"approval"`

	Scale   *ScaleConfig   `yaml:"scale"`
	Recycle *RecycleConfig `yaml:"recycle"`
	Reload  *ReloadConfig  `yaml:"reload"`
	Flush   *FlushConfig   `yaml:"flush"`
	// BlockSource is the block of block-source.
	BlockSource *BlockSourceConfig `yaml:"block_source"`

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

// ScaleConfig sets or changes a Deployment's replicas within bounds.
type ScaleConfig struct {
	// Exactly one of Replicas (set) and Delta (add, may be negative).
	Replicas    *int32 `yaml:"replicas"`
	Delta       *int32 `yaml:"delta"`
	MinReplicas int32  `yaml:"min_replicas"`
	MaxReplicas int32  `yaml:"max_replicas"`
}

// RecycleConfig bounds how many pods of a workload are recycled.
type RecycleConfig struct {
	// MaxFraction of the workload's pods may be recycled within the
	// cooldown.
	MaxFraction float64 `yaml:"max_fraction"`
}

// ReloadConfig is the HTTP request sent to every ready pod.
type ReloadConfig struct {
	Scheme string `yaml:"scheme"`
	Port   int    `yaml:"port"`
	Path   string `yaml:"path"`
	Method string `yaml:"method"`
}

// BlockSourceConfig says where block-source writes a source and how long
// the entry lasts. The gateway reloaded afterwards is the rule's target
// Deployment; the ConfigMap lives in the target's namespace.
type BlockSourceConfig struct {
	// Label is the alert label holding the address or CIDR to block.
	Label string `yaml:"label"`
	// ConfigMap is the blocklist's name; the remediator's RBAC names it
	// (resourceNames), so the policy cannot point it at another one.
	ConfigMap string `yaml:"configmap"`
	// Key is the ConfigMap's data key holding the blocklist.
	Key string `yaml:"key"`
	// Expiry is how long an entry lasts (at most 24h); the remediator
	// removes expired entries and reloads the gateway.
	Expiry time.Duration `yaml:"expiry"`
	// MaxEntries caps the active entries.
	MaxEntries int `yaml:"max_entries"`
	// Protected ranges (CIDRs: the cluster's pod and service ranges, the
	// office, health checkers) are never blocked, on top of loopback,
	// private and link-local ranges.
	Protected []string `yaml:"protected"`
	// Reload is the HTTP request that makes the gateway read the list.
	Reload ReloadConfig `yaml:"reload"`

	protected []netip.Prefix
}

// FlushConfig is the block of flush-cache. It has no settings: the
// database and its credentials belong to the redis target the rule names.
type FlushConfig struct{}

// DefaultPolicy holds the values used for fields a policy file leaves out.
var DefaultPolicy = Policy{
	Mode: ModeFirstMatch,
	Defaults: Defaults{
		Cooldown: 10 * time.Minute,
		Timeout:  2 * time.Minute,
		RetryFor: 15 * time.Minute,
		MaxDelay: time.Minute,
	},
	RateLimit: RateLimitConfig{ActionsPerHour: 20},
	Breaker: BreakerConfig{
		Failures: 3,
		Refires:  3,
		Window:   time.Hour,
		OpenFor:  time.Hour,
	},
	Verify: DefaultVerifyConfig,
	Gates:  DefaultGatesConfig,
}

// Defaults of the per-action blocks, for fields a rule leaves out.
var (
	DefaultRecycleConfig = RecycleConfig{MaxFraction: 0.25}
	DefaultReloadConfig  = ReloadConfig{Scheme: "http", Path: "/-/reload", Method: "POST"}
	DefaultBlockSource   = BlockSourceConfig{Label: "source", Key: "blocklist.conf", Expiry: time.Hour, MaxEntries: 100}
)

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
// defaults, validates it, compiles it and reads its password files.
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
	p.applyDefaults()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	if err := p.compile(logger); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	if err := p.readSecrets(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return &p, nil
}

// applyDefaults fills in what the rules leave out: the policy's cooldown
// and timeout, and the defaults of the block of the rule's own action. A
// block for another action is left alone, so that validate reports it.
func (p *Policy) applyDefaults() {
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Cooldown == 0 {
			r.Cooldown = p.Defaults.Cooldown
		}
		if r.Timeout == 0 {
			r.Timeout = p.Defaults.Timeout
		}
		switch r.Action {
		case actions.Scale:
			if r.Scale == nil {
				r.Scale = &ScaleConfig{}
			}
		case actions.Recycle:
			if r.Recycle == nil {
				r.Recycle = &RecycleConfig{}
			}
			if r.Recycle.MaxFraction == 0 {
				r.Recycle.MaxFraction = DefaultRecycleConfig.MaxFraction
			}
		case actions.Reload:
			if r.Reload == nil {
				r.Reload = &ReloadConfig{}
			}
			r.Reload.applyDefaults()
		case actions.BlockSource:
			if r.BlockSource == nil {
				r.BlockSource = &BlockSourceConfig{}
			}
			r.BlockSource.applyDefaults()
		case actions.FlushCache:
			if r.Flush == nil {
				r.Flush = &FlushConfig{}
			}
		}
		if r.Approval == "" {
			r.Approval = ApprovalNone
			if r.Action == actions.BlockSource {
				r.Approval = ApprovalRequired
			}
		}
	}
	p.Approvals.applyDefaults()
}

func (c *ReloadConfig) applyDefaults() {
	def := DefaultReloadConfig
	if c.Scheme == "" {
		c.Scheme = def.Scheme
	}
	if c.Path == "" {
		c.Path = def.Path
	}
	if c.Method == "" {
		c.Method = def.Method
	}
}

func (c *BlockSourceConfig) applyDefaults() {
	def := DefaultBlockSource
	if c.Label == "" {
		c.Label = def.Label
	}
	if c.Key == "" {
		c.Key = def.Key
	}
	if c.Expiry == 0 {
		c.Expiry = def.Expiry
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = def.MaxEntries
	}
	c.Reload.applyDefaults()
}

// validate checks a policy after applyDefaults; every error names the
// field it is about.
func (p *Policy) validate() error {
	if err := p.validateSettings(); err != nil {
		return err
	}
	if err := p.validateGates(); err != nil {
		return err
	}
	if err := p.Approvals.validate(); err != nil {
		return err
	}
	redisNames := map[string]bool{}
	for i := range p.Redis {
		r := &p.Redis[i]
		path := fmt.Sprintf("redis[%d]", i)
		if redisNames[r.Name] {
			return fmt.Errorf("%s.name: %q is already used", path, r.Name)
		}
		if err := r.validate(path); err != nil {
			return err
		}
		redisNames[r.Name] = true
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

func (p *Policy) validateSettings() error {
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
	return nil
}

func (r *RedisTarget) validate(path string) error {
	if r.Name == "" {
		return fmt.Errorf("%s.name: required", path)
	}
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
	return nil
}

// readSecrets reads the Redis password files, at every load and reload.
func (p *Policy) readSecrets() error {
	for i := range p.Redis {
		r := &p.Redis[i]
		if r.PasswordFile == "" {
			continue
		}
		pw, err := secret.ReadFile(r.PasswordFile)
		if err != nil {
			return fmt.Errorf("redis[%d].password_file: %w", i, err)
		}
		r.password = pw
	}
	return nil
}

// actionBlocks names each action's parameter block.
var actionBlocks = []struct {
	field string
	kind  actions.Kind
	set   func(r *Rule) bool
}{
	{"scale", actions.Scale, func(r *Rule) bool { return r.Scale != nil }},
	{"recycle", actions.Recycle, func(r *Rule) bool { return r.Recycle != nil }},
	{"reload", actions.Reload, func(r *Rule) bool { return r.Reload != nil }},
	{"flush", actions.FlushCache, func(r *Rule) bool { return r.Flush != nil }},
	{"block_source", actions.BlockSource, func(r *Rule) bool { return r.BlockSource != nil }},
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
	switch r.Action {
	case actions.Restart, actions.Scale, actions.Recycle, actions.Reload, actions.FlushCache, actions.BlockSource:
	case "":
		return fmt.Errorf("%s.action: required", path)
	default:
		return fmt.Errorf("%s.action: unknown action %q (want restart, scale, recycle, flush-cache, reload or block-source)", path, r.Action)
	}
	if r.Approval != ApprovalRequired && r.Approval != ApprovalNone {
		return fmt.Errorf("%s.approval: must be %s or %s, got %q", path, ApprovalRequired, ApprovalNone, r.Approval)
	}
	if r.Approval == ApprovalRequired && r.Action == actions.FlushCache {
		return fmt.Errorf("%s.approval: %s is not available for %s (its records live in Redis, approvals in Kubernetes)", path, ApprovalRequired, actions.FlushCache)
	}
	for _, b := range actionBlocks {
		if b.kind != r.Action && b.set(r) {
			return fmt.Errorf("%s.%s: only valid for action %s, not %s", path, b.field, b.kind, r.Action)
		}
	}
	if r.Action == actions.FlushCache {
		return r.validateRedisTarget(path, redisNames)
	}
	if err := r.validateKubeTarget(path); err != nil {
		return err
	}
	switch r.Action {
	case actions.Scale:
		return r.Scale.validate(path + ".scale")
	case actions.Recycle:
		if r.Target.Pod == "" {
			return fmt.Errorf("%s.target.pod: required for action %s", path, r.Action)
		}
		return r.Recycle.validate(path + ".recycle")
	case actions.Reload:
		return r.Reload.validate(path + ".reload")
	case actions.BlockSource:
		return r.BlockSource.validate(path + ".block_source")
	}
	return nil
}

// validateKubeTarget checks the target and allowlist of an action on a
// Deployment.
func (r *Rule) validateKubeTarget(path string) error {
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
	if r.Target.Pod != "" && r.Action != actions.Recycle {
		return fmt.Errorf("%s.target.pod: only valid for action %s", path, actions.Recycle)
	}
	return nil
}

// validateRedisTarget checks the target and allowlist of flush-cache.
func (r *Rule) validateRedisTarget(path string, redisNames map[string]bool) error {
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
	return nil
}

func (c *ScaleConfig) validate(path string) error {
	if (c.Replicas == nil) == (c.Delta == nil) {
		return fmt.Errorf("%s: set exactly one of replicas or delta", path)
	}
	if c.MaxReplicas < 1 {
		return fmt.Errorf("%s.max_replicas: must be at least 1", path)
	}
	if c.MinReplicas < 0 || c.MinReplicas > c.MaxReplicas {
		return fmt.Errorf("%s.min_replicas: must be between 0 and max_replicas", path)
	}
	if c.Replicas != nil && (*c.Replicas < c.MinReplicas || *c.Replicas > c.MaxReplicas) {
		return fmt.Errorf("%s.replicas: must be between min_replicas and max_replicas", path)
	}
	if c.Delta != nil && *c.Delta == 0 {
		return fmt.Errorf("%s.delta: must not be 0", path)
	}
	return nil
}

func (c *RecycleConfig) validate(path string) error {
	if c.MaxFraction <= 0 || c.MaxFraction > 1 {
		return fmt.Errorf("%s.max_fraction: must be in (0, 1]", path)
	}
	return nil
}

func (c *ReloadConfig) validate(path string) error {
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("%s.port: must be between 1 and 65535", path)
	}
	if c.Scheme != "http" && c.Scheme != "https" {
		return fmt.Errorf("%s.scheme: must be http or https", path)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("%s.path: must start with /", path)
	}
	if c.Method != "POST" && c.Method != "PUT" && c.Method != "GET" {
		return fmt.Errorf("%s.method: must be POST, PUT or GET", path)
	}
	return nil
}

func (c *BlockSourceConfig) validate(path string) error {
	if msgs := validation.IsDNS1123Subdomain(c.ConfigMap); len(msgs) > 0 {
		return fmt.Errorf("%s.configmap: %q: %s", path, c.ConfigMap, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsConfigMapKey(c.Key); len(msgs) > 0 {
		return fmt.Errorf("%s.key: %q: %s", path, c.Key, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsQualifiedName(c.Label); len(msgs) > 0 {
		return fmt.Errorf("%s.label: %q: %s", path, c.Label, strings.Join(msgs, "; "))
	}
	if c.Expiry <= 0 || c.Expiry > actions.MaxBlockFor {
		return fmt.Errorf("%s.expiry: must be more than 0 and at most %s, got %s", path, actions.MaxBlockFor, c.Expiry)
	}
	if c.MaxEntries < 1 || c.MaxEntries > maxBlockEntries {
		return fmt.Errorf("%s.max_entries: must be between 1 and %d, got %d", path, maxBlockEntries, c.MaxEntries)
	}
	c.protected = c.protected[:0]
	for i, s := range c.Protected {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("%s.protected[%d]: %w", path, i, err)
		}
		c.protected = append(c.protected, p.Masked())
	}
	return c.Reload.validate(path + ".reload")
}

// maxBlockEntries bounds max_entries: the blocklist is one ConfigMap key
// (at most 1 MiB), and the gateway reads it whole on every reload.
const maxBlockEntries = 10000

// setReload copies the reload request into the action's request.
func setReload(req *actions.Request, c *ReloadConfig) {
	req.ReloadScheme = c.Scheme
	req.ReloadPort = c.Port
	req.ReloadPath = c.Path
	req.ReloadMethod = c.Method
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

// maxRenderedLen caps a rendered name before validation, so a template
// cannot build a huge string out of a large label value.
const maxRenderedLen = 253

type compiledRule struct {
	matchers   labels.Matchers
	blockWhen  []labels.Matchers
	namespace  *template.Template
	deployment *template.Template
	pod        *template.Template
	redis      *template.Template
}

// compile parses matchers and templates. It runs after validate.
func (p *Policy) compile(logger *slog.Logger) error {
	parse := compat.FallbackMatcherParser(logger)
	for i := range p.Rules {
		r := &p.Rules[i]
		path := fmt.Sprintf("rules[%d]", i)
		c := &compiledRule{}
		for j, m := range r.Matchers {
			ms, err := parse(m, path)
			if err != nil {
				return fmt.Errorf("%s.matchers[%d]: %w", path, j, err)
			}
			c.matchers = append(c.matchers, ms)
		}
		var err error
		if c.blockWhen, err = compileBlockWhen(parse, r.BlockWhen, path); err != nil {
			return err
		}
		for _, t := range []struct {
			field string
			text  string
			out   **template.Template
		}{
			{"namespace", r.Target.Namespace, &c.namespace},
			{"deployment", r.Target.Deployment, &c.deployment},
			{"pod", r.Target.Pod, &c.pod},
			{"redis", r.Target.Redis, &c.redis},
		} {
			if t.text == "" {
				continue
			}
			if *t.out, err = parseTargetTemplate(t.field, t.text); err != nil {
				return fmt.Errorf("%s.target.%s: %w", path, t.field, err)
			}
		}
		r.compiled = c
	}
	return nil
}

var templateFuncs = template.FuncMap{
	"lower":      strings.ToLower,
	"trimPrefix": strings.TrimPrefix,
	"trimSuffix": strings.TrimSuffix,
	"replace":    strings.ReplaceAll,
}

func parseTargetTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Funcs(templateFuncs).Parse(text)
}

// templateData is what target templates see.
type templateData struct {
	Labels      map[string]string
	Annotations map[string]string
	Fingerprint string
	Status      string
}

// renderName executes a target template and checks that the result is a
// valid Kubernetes name (DNS-1123 label for namespaces, subdomain otherwise).
func renderName(t *template.Template, a *amtemplate.Alert, label bool) (string, error) {
	data := templateData{
		Labels:      map[string]string(a.Labels),
		Annotations: map[string]string(a.Annotations),
		Fingerprint: a.Fingerprint,
		Status:      a.Status,
	}
	if data.Labels == nil {
		data.Labels = map[string]string{}
	}
	if data.Annotations == nil {
		data.Annotations = map[string]string{}
	}
	var buf bytes.Buffer
	w := &cappedWriter{buf: &buf, limit: maxRenderedLen + 1}
	if err := t.Execute(w, data); err != nil {
		return "", fmt.Errorf("render %s: %w", t.Name(), err)
	}
	name := strings.TrimSpace(buf.String())
	if name == "" {
		return "", fmt.Errorf("render %s: empty result", t.Name())
	}
	var errs []string
	if label {
		errs = validation.IsDNS1123Label(name)
	} else {
		errs = validation.IsDNS1123Subdomain(name)
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("render %s: %q is not a valid name: %s", t.Name(), truncate(name, 80), strings.Join(errs, "; "))
	}
	return name, nil
}

type cappedWriter struct {
	buf   *bytes.Buffer
	limit int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.limit {
		return 0, fmt.Errorf("result longer than %d bytes", maxRenderedLen)
	}
	return w.buf.Write(p)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// target identifies what an action acts on: a Deployment (restart, scale,
// recycle, reload) or a configured Redis target (flush-cache). It is the
// unit of cooldown, dedupe and circuit breaking.
type target struct {
	Kind      string // "deployment", "redis" or "source" (block-source)
	Namespace string // empty for redis
	Name      string
}

// String is the metric label value: "<kind>/<name>".
func (t target) String() string { return t.Kind + "/" + t.Name }

// decision is what the policy says about one alert and one rule.
type decision struct {
	Rule     *Rule
	Target   target // zero when the target could not be resolved
	Request  actions.Request
	DryRun   bool
	Cooldown time.Duration
	// NeedsApproval: a person approves before the action runs.
	NeedsApproval bool
	// SkipReason is set when the policy refuses; Detail explains it.
	SkipReason string
	Detail     string
}

// evaluate returns the policy's decisions for one alert: one per matching
// rule (only the first with first_match), or a single no_matching_rule skip.
// It does not consult safety state.
func (p *Policy) evaluate(a *amtemplate.Alert, globalDryRun bool) []decision {
	lset := make(model.LabelSet, len(a.Labels))
	for k, v := range a.Labels {
		lset[model.LabelName(k)] = model.LabelValue(v)
	}
	var out []decision
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.compiled.matchers.Matches(lset) {
			continue
		}
		out = append(out, p.ruleDecision(r, a, globalDryRun))
		if p.Mode == ModeFirstMatch {
			break
		}
	}
	if len(out) == 0 {
		return []decision{{SkipReason: ReasonNoMatchingRule, Detail: "no rule matches the alert's labels"}}
	}
	return out
}

// ruleDecision renders the target of one matching rule and checks it
// against the rule's allowlist.
func (p *Policy) ruleDecision(r *Rule, a *amtemplate.Alert, globalDryRun bool) decision {
	d := decision{
		Rule:          r,
		DryRun:        globalDryRun || p.DryRun || r.DryRun,
		Cooldown:      r.Cooldown,
		NeedsApproval: r.Approval == ApprovalRequired,
	}
	d.Request = actions.Request{
		Kind:    r.Action,
		Reason:  fmt.Sprintf("alert %s (fingerprint %s)", a.Labels["alertname"], a.Fingerprint),
		DryRun:  d.DryRun,
		Timeout: r.Timeout,
	}
	c := r.compiled
	skip := func(reason, detail string) decision {
		d.SkipReason, d.Detail = reason, detail
		return d
	}

	if r.Action == actions.FlushCache {
		name, err := renderName(c.redis, a, false)
		if err != nil {
			return skip(ReasonInvalidTarget, err.Error())
		}
		if !slices.Contains(r.Allow.RedisTargets, name) {
			return skip(ReasonNotAllowed, fmt.Sprintf("redis target %q is not in allow.redis_targets", name))
		}
		rt, ok := p.redisTarget(name)
		if !ok {
			return skip(ReasonNotAllowed, fmt.Sprintf("redis target %q is not configured", name))
		}
		d.Target = target{Kind: "redis", Name: name}
		if !rt.Enabled {
			return skip(ReasonDisabled, fmt.Sprintf("flush-cache is not enabled for redis target %q (set enabled: true)", name))
		}
		d.Request.Redis = actions.RedisTarget{
			Name: rt.Name, Address: rt.Address, Username: rt.Username,
			Password: rt.password, TLS: rt.TLS, DB: rt.DB,
		}
		return d
	}

	ns, err := renderName(c.namespace, a, true)
	if err != nil {
		return skip(ReasonInvalidTarget, err.Error())
	}
	deploy, err := renderName(c.deployment, a, false)
	if err != nil {
		return skip(ReasonInvalidTarget, err.Error())
	}
	// The allowlist is checked on the rendered names, so nothing in an
	// alert can widen it.
	if !slices.Contains(r.Allow.Namespaces, ns) {
		return skip(ReasonNotAllowed, fmt.Sprintf("namespace %q is not in allow.namespaces", ns))
	}
	if !slices.Contains(r.Allow.Deployments, deploy) {
		return skip(ReasonNotAllowed, fmt.Sprintf("deployment %q is not in allow.deployments", deploy))
	}
	d.Target = target{Kind: "deployment", Namespace: ns, Name: deploy}
	d.Request.Namespace = ns
	d.Request.Deployment = deploy
	switch r.Action {
	case actions.Scale:
		d.Request.Replicas = r.Scale.Replicas
		d.Request.Delta = r.Scale.Delta
		d.Request.MinReplicas = r.Scale.MinReplicas
		d.Request.MaxReplicas = r.Scale.MaxReplicas
	case actions.Recycle:
		pod, err := renderName(c.pod, a, false)
		if err != nil {
			return skip(ReasonInvalidTarget, err.Error())
		}
		d.Request.Pod = pod
		d.Request.MaxFraction = r.Recycle.MaxFraction
	case actions.Reload:
		setReload(&d.Request, r.Reload)
	case actions.BlockSource:
		return r.BlockSource.decide(d, a)
	}
	return d
}
