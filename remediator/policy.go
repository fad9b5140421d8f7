package remediator

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/warden-sre/warden/remediator/actions"
)

// maxRenderedLen caps a rendered name before validation, so a template
// cannot build a huge string out of a large label value.
const maxRenderedLen = 253

type compiledRule struct {
	matchers   labels.Matchers
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
	Kind      string // "deployment" or "redis"
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
		out = append(out, p.decide(r, a, globalDryRun))
		if p.Mode == ModeFirstMatch {
			break
		}
	}
	if len(out) == 0 {
		return []decision{{SkipReason: ReasonNoMatchingRule, Detail: "no rule matches the alert's labels"}}
	}
	return out
}

func (p *Policy) decide(r *Rule, a *amtemplate.Alert, globalDryRun bool) decision {
	d := decision{
		Rule:     r,
		DryRun:   globalDryRun || p.DryRun || r.DryRun,
		Cooldown: r.Cooldown,
	}
	if d.Cooldown == 0 {
		d.Cooldown = p.Defaults.Cooldown
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = p.Defaults.Timeout
	}
	d.Request = actions.Request{
		Kind:    r.Action,
		Reason:  fmt.Sprintf("alert %s (fingerprint %s)", a.Labels["alertname"], a.Fingerprint),
		DryRun:  d.DryRun,
		Timeout: timeout,
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
		d.Request.Replicas = r.Params.Replicas
		d.Request.Delta = r.Params.Delta
		d.Request.MinReplicas = r.Params.MinReplicas
		d.Request.MaxReplicas = r.Params.MaxReplicas
	case actions.Recycle:
		pod, err := renderName(c.pod, a, false)
		if err != nil {
			return skip(ReasonInvalidTarget, err.Error())
		}
		d.Request.Pod = pod
		d.Request.MaxFraction = r.Params.MaxFraction
	case actions.Reload:
		d.Request.ReloadScheme = r.Params.Scheme
		d.Request.ReloadPort = r.Params.Port
		d.Request.ReloadPath = r.Params.Path
		d.Request.ReloadMethod = r.Params.Method
	}
	return d
}
