package remediator

import (
	"strings"
	"testing"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"

	"github.com/warden-sre/warden/remediator/actions"
)

const basePolicy = `
mode: %s
rules:
  - name: restart-auth
    matchers: ['alertname="HighMemoryUsage"', 'namespace=~"rust-security|staging"']
    action: restart
    target: {namespace: '{{ .Labels.namespace }}', deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [rust-security], deployments: [auth-service, policy-service]}
  - name: scale-auth
    matchers: ['alertname="HighMemoryUsage"']
    action: scale
    target: {namespace: rust-security, deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [rust-security], deployments: [auth-service]}
    scale: {delta: 1, min_replicas: 2, max_replicas: 5}
`

func mustPolicy(t testing.TB, yaml string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(yaml))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

func alert(labels map[string]string) *amtemplate.Alert {
	return &amtemplate.Alert{
		Status:      "firing",
		Labels:      labels,
		Annotations: amtemplate.KV{},
		StartsAt:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Fingerprint: "0123456789abcdef",
	}
}

func TestParsePolicyRejectsInvalidPolicies(t *testing.T) {
	okRule := `
  - name: r
    matchers: ['alertname="A"']
    action: restart
    target: {namespace: ns, deployment: d}
    allow: {namespaces: [ns], deployments: [d]}`
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "bogus: 1\n", "field bogus not found"},
		{"bad mode", "mode: random\n", "mode: must be"},
		{"negative cooldown", "defaults: {cooldown: -1s}\n", "defaults.cooldown"},
		{"zero breaker failures", "breaker: {failures: 0}\n", "breaker.failures"},
		{"bad duration", "defaults: {timeout: soon}\n", "parse policy"},
		{"rule without name", "rules:\n  - matchers: ['a=\"b\"']\n    action: restart\n", "rules[0].name: required"},
		{"duplicate rule", "rules:" + okRule + okRule, `rules[1].name: "r" is already used`},
		{"no matchers", "rules:\n  - name: r\n    action: restart\n", "rules[0].matchers"},
		{"bad matcher", "rules:" + strings.Replace(okRule, `'alertname="A"'`, `'alertname=~"("'`, 1), "rules[0].matchers[0]"},
		{"unknown action", "rules:" + strings.Replace(okRule, "restart", "delete", 1), `unknown action "delete"`},
		{"no allowlist", "rules:" + strings.Replace(okRule, "allow: {namespaces: [ns], deployments: [d]}", "allow: {deployments: [d]}", 1), "rules[0].allow.namespaces: required"},
		{"bad template", "rules:" + strings.Replace(okRule, "deployment: d}", "deployment: '{{ .Labels.x'}", 1), "rules[0].target.deployment"},
		{"scale without bounds", "rules:" + strings.Replace(okRule, "action: restart", "action: scale", 1), "exactly one of replicas or delta"},
		{"scale replicas out of bounds", "rules:" + strings.Replace(okRule, "action: restart", "action: scale\n    scale: {replicas: 9, max_replicas: 5}", 1), "rules[0].scale.replicas"},
		{"recycle without pod", "rules:" + strings.Replace(okRule, "action: restart", "action: recycle", 1), "target.pod: required"},
		{"reload without port", "rules:" + strings.Replace(okRule, "action: restart", "action: reload", 1), "rules[0].reload.port"},
		{"recycle fraction out of range", "rules:" + strings.NewReplacer("action: restart", "action: recycle\n    recycle: {max_fraction: 1.5}", "deployment: d}", "deployment: d, pod: p}").Replace(okRule), "rules[0].recycle.max_fraction"},
		{"reload bad method", "rules:" + strings.Replace(okRule, "action: restart", "action: reload\n    reload: {port: 8080, method: DELETE}", 1), "rules[0].reload.method"},
		// One block per action: a parameter of another action is an error
		// naming the field, never silently ignored.
		{"restart with a scale block", "rules:" + strings.Replace(okRule, "action: restart", "action: restart\n    scale: {max_replicas: 5}", 1), "rules[0].scale: only valid for action scale"},
		{"scale with a reload block", "rules:" + strings.Replace(okRule, "action: restart", "action: scale\n    scale: {delta: 1, max_replicas: 5}\n    reload: {port: 80}", 1), "rules[0].reload: only valid for action reload"},
		{"flush-cache with a recycle block", "redis: [{name: c, address: 'h:1', coordination_db: 1}]\nrules:\n  - name: f\n    matchers: ['a=\"b\"']\n    action: flush-cache\n    target: {redis: c}\n    allow: {redis_targets: [c]}\n    recycle: {max_fraction: 1}\n", "rules[0].recycle: only valid for action recycle"},
		{"restart with a pod target", "rules:" + strings.Replace(okRule, "deployment: d}", "deployment: d, pod: p}", 1), "rules[0].target.pod: only valid for action recycle"},
		{"parameter of another action inside a block", "rules:" + strings.Replace(okRule, "action: restart", "action: scale\n    scale: {delta: 1, max_replicas: 5, max_fraction: 0.5}", 1), "field max_fraction not found"},
		{"the old flat params block", "rules:" + strings.Replace(okRule, "action: restart", "action: scale\n    params: {delta: 1, max_replicas: 5}", 1), "field params not found"},
		{"flush unknown redis", "rules:\n  - name: f\n    matchers: ['a=\"b\"']\n    action: flush-cache\n    target: {redis: c}\n    allow: {redis_targets: [c]}\n", `"c" is not a configured redis target`},
		{"redis coordination db equals db", "redis: [{name: c, address: 'h:6379', db: 3, coordination_db: 3}]\n", "coordination_db: must differ"},
		{"redis without port", "redis: [{name: c, address: h, coordination_db: 1}]\n", "redis[0].address"},
		{"missing password file", "redis: [{name: c, address: 'h:1', coordination_db: 1, password_file: /nonexistent/x}]\n", "redis[0].password_file"},
		{"empty password file", "redis: [{name: c, address: 'h:1', coordination_db: 1, password_file: /dev/null}]\n", "redis[0].password_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("ParsePolicy accepted:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParsePolicyAppliesDefaults(t *testing.T) {
	p := mustPolicy(t, "")
	if p.Mode != ModeFirstMatch || p.Defaults.Cooldown != 10*time.Minute || p.Breaker.Failures != 3 || p.RateLimit.ActionsPerHour != 20 {
		t.Fatalf("defaults not applied: %+v", p)
	}
}

func TestEvaluate(t *testing.T) {
	labels := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name     string
		mode     string
		labels   map[string]string
		want     []string // "<rule>:<skip reason or target>"
		globalDR bool
	}{
		{"first match acts once", ModeFirstMatch,
			labels("alertname", "HighMemoryUsage", "namespace", "rust-security", "deployment", "auth-service"),
			[]string{"restart-auth:deployment/auth-service"}, false},
		{"all matches acts twice", ModeAllMatches,
			labels("alertname", "HighMemoryUsage", "namespace", "rust-security", "deployment", "auth-service"),
			[]string{"restart-auth:deployment/auth-service", "scale-auth:deployment/auth-service"}, false},
		{"no rule matches", ModeAllMatches,
			labels("alertname", "DiskFull"),
			[]string{":no_matching_rule"}, false},
		{"namespace outside allowlist is refused", ModeFirstMatch,
			labels("alertname", "HighMemoryUsage", "namespace", "staging", "deployment", "auth-service"),
			[]string{"restart-auth:not_allowed"}, false},
		{"deployment outside allowlist is refused", ModeFirstMatch,
			labels("alertname", "HighMemoryUsage", "namespace", "rust-security", "deployment", "postgres"),
			[]string{"restart-auth:not_allowed"}, false},
		{"missing label is an invalid target", ModeFirstMatch,
			labels("alertname", "HighMemoryUsage", "namespace", "rust-security"),
			[]string{"restart-auth:invalid_target"}, false},
		{"label that is not a name is an invalid target", ModeFirstMatch,
			labels("alertname", "HighMemoryUsage", "namespace", "rust-security", "deployment", "../etc"),
			[]string{"restart-auth:invalid_target"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPolicy(t, strings.Replace(basePolicy, "%s", tc.mode, 1))
			ds := p.evaluate(alert(tc.labels), tc.globalDR)
			var got []string
			for _, d := range ds {
				name := ""
				if d.Rule != nil {
					name = d.Rule.Name
				}
				if d.SkipReason != "" {
					got = append(got, name+":"+d.SkipReason)
				} else {
					got = append(got, name+":"+d.Target.String())
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEvaluateBuildsRequests(t *testing.T) {
	p := mustPolicy(t, `
dry_run: false
defaults: {timeout: 30s, cooldown: 5m}
redis:
  - {name: cache, address: 'localhost:6379', db: 2, coordination_db: 0, enabled: true}
  - {name: sessions, address: 'localhost:6379', db: 3, coordination_db: 0}
rules:
  - name: scale
    matchers: ['alertname="Slow"']
    action: scale
    target: {namespace: ns, deployment: '{{ .Labels.job | lower }}'}
    allow: {namespaces: [ns], deployments: [api]}
    scale: {replicas: 3, min_replicas: 2, max_replicas: 4}
    cooldown: 1m
    dry_run: true
  - name: recycle
    matchers: ['alertname="Leak"']
    action: recycle
    target: {namespace: ns, deployment: api, pod: '{{ .Labels.pod }}'}
    allow: {namespaces: [ns], deployments: [api]}
  - name: flush
    matchers: ['alertname="CacheBad"']
    action: flush-cache
    target: {redis: '{{ .Labels.cache }}'}
    allow: {redis_targets: [cache, sessions]}
`)
	d := p.evaluate(alert(map[string]string{"alertname": "Slow", "job": "API"}), false)[0]
	if d.SkipReason != "" || d.Request.Kind != actions.Scale || *d.Request.Replicas != 3 || d.Request.MinReplicas != 2 ||
		d.Request.MaxReplicas != 4 || !d.DryRun || !d.Request.DryRun || d.Cooldown != time.Minute || d.Request.Timeout != 30*time.Second {
		t.Fatalf("scale decision: %+v", d)
	}
	d = p.evaluate(alert(map[string]string{"alertname": "Leak", "pod": "api-7d9f-abcde"}), false)[0]
	if d.SkipReason != "" || d.Request.Pod != "api-7d9f-abcde" || d.Request.MaxFraction != 0.25 || d.Cooldown != 5*time.Minute || d.DryRun {
		t.Fatalf("recycle decision: %+v", d)
	}
	d = p.evaluate(alert(map[string]string{"alertname": "CacheBad", "cache": "cache"}), true)[0]
	if d.SkipReason != "" || d.Target.String() != "redis/cache" || d.Request.Redis.DB != 2 || !d.DryRun {
		t.Fatalf("flush decision: %+v", d)
	}
	d = p.evaluate(alert(map[string]string{"alertname": "CacheBad", "cache": "sessions"}), false)[0]
	if d.SkipReason != ReasonDisabled {
		t.Fatalf("flush of a target without enabled: true must be refused, got %+v", d)
	}
}

func FuzzRenderTarget(f *testing.F) {
	f.Add("{{ .Labels.deployment }}", "deployment", "auth-service")
	f.Add("{{ .Labels.job | lower | trimPrefix \"x-\" }}", "job", "X-API")
	f.Add("{{ range $i := .Labels }}{{ $i }}{{ end }}", "a", "b")
	f.Add("{{ printf \"%0999d\" 1 }}", "a", "b")
	f.Add("{{ .Annotations.missing }}", "a", "b")
	f.Add("{{ replace .Labels.a \".\" \"-\" }}", "a", "a.b.c")
	f.Fuzz(func(t *testing.T, text, key, value string) {
		tmpl, err := parseTargetTemplate("deployment", text)
		if err != nil {
			return
		}
		a := alert(map[string]string{key: value, "alertname": "A"})
		for _, label := range []bool{true, false} {
			name, err := renderName(tmpl, a, label)
			if err != nil {
				continue
			}
			if name == "" || len(name) > maxRenderedLen || strings.ContainsAny(name, "/ \n") {
				t.Fatalf("renderName(%q) = %q: not a valid name", text, name)
			}
		}
	})
}

func TestParsePolicyFillsDefaultsOfTheRuleAndItsAction(t *testing.T) {
	p := mustPolicy(t, `
defaults: {cooldown: 7m, timeout: 40s}
rules:
  - name: reload
    matchers: ['alertname="Stale"']
    action: reload
    target: {namespace: ns, deployment: api}
    allow: {namespaces: [ns], deployments: [api]}
    reload: {port: 8080}
    timeout: 5s
  - name: recycle
    matchers: ['alertname="Leak"']
    action: recycle
    target: {namespace: ns, deployment: api, pod: '{{ .Labels.pod }}'}
    allow: {namespaces: [ns], deployments: [api]}
`)
	reload, recycle := p.Rules[0], p.Rules[1]
	if want := (ReloadConfig{Scheme: "http", Port: 8080, Path: "/-/reload", Method: "POST"}); *reload.Reload != want {
		t.Errorf("reload block %+v, want %+v", *reload.Reload, want)
	}
	if reload.Cooldown != 7*time.Minute || reload.Timeout != 5*time.Second {
		t.Errorf("reload rule cooldown %s, timeout %s; want 7m from defaults and its own 5s", reload.Cooldown, reload.Timeout)
	}
	if recycle.Recycle == nil || recycle.Recycle.MaxFraction != 0.25 || recycle.Timeout != 40*time.Second {
		t.Errorf("recycle rule without a block: %+v, timeout %s; want max_fraction 0.25 and the default timeout", recycle.Recycle, recycle.Timeout)
	}
	if reload.Scale != nil || reload.Recycle != nil || recycle.Reload != nil {
		t.Error("defaults filled a block of another action")
	}
}
