package demo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/exporter"
	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

func TestCompressRulesScalesRangesAndFor(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.rules.yml")
	if err := os.WriteFile(src, []byte(`groups:
  - name: g
    rules:
      - alert: A
        expr: |
          rate(x_total[5m]) > 1
          and
          max_over_time(y[1h:1m] offset 30m) > 0
        for: 2m
        keep_firing_for: 1m
      - record: r
        expr: increase(z_total[1m])
      - alert: NoFor
        expr: up == 0
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := compressRules([]string{src}, out, 30, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	rules := readRules(t, files[0])
	for _, c := range []struct {
		i         int
		key, want string
	}{
		{0, "expr", "rate(x_total[10s]) > 1 and max_over_time(y[2m:2s] offset 1m) > 0"},
		{0, "for", "4s"},
		{0, "keep_firing_for", "2s"},
		{1, "expr", "increase(z_total[5s])"}, // 2s would be below the floor
		{2, "expr", "up == 0"},
	} {
		if rules[c.i][c.key] != c.want {
			t.Errorf("rule %d %s = %q, want %q", c.i, c.key, rules[c.i][c.key], c.want)
		}
	}
	if _, ok := rules[2]["for"]; ok {
		t.Error("a rule without for gained one")
	}
	if _, err := compressRules([]string{src}, out, 0, time.Second, nil); err == nil {
		t.Error("factor 0 accepted")
	}
}

// readRules returns the rules of the first group of a rule file.
func readRules(t *testing.T, file string) []map[string]string {
	t.Helper()
	var got struct {
		Groups []struct {
			Rules []map[string]string `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Groups) == 0 {
		t.Fatalf("%s: no group", file)
	}
	return got.Groups[0].Rules
}

// TestCompressRulesScalesDurationMetrics: selectors of a metric that
// reports a compressed duration are multiplied by the factor, wherever
// they stand in the expression, after the ranges and offsets are scaled;
// other metrics are left alone, and what cannot be rewritten is refused.
func TestCompressRulesScalesDurationMetrics(t *testing.T) {
	const window = "warden_auth_failed_logins_window_seconds"
	cases := []struct {
		name, expr string
		want       string // "" when compressRules must refuse the rule
	}{
		{
			name: "BruteForceSource",
			expr: `warden_auth_failed_logins_by_source{source!~"other|unknown"} / ignoring (source) group_left () (` + window + ` > 0) * 60 > 10`,
			want: `warden_auth_failed_logins_by_source{source!~"other|unknown"} / ignoring (source) group_left () ((` + window + ` * 30) > 0) * 60 > 10`,
		},
		{name: "alone", expr: window, want: `(` + window + ` * 30)`},
		{name: "name matcher", expr: `{__name__="` + window + `", instance="a"}`, want: `({__name__="` + window + `",instance="a"} * 30)`},
		{name: "offset scaled too", expr: window + ` offset 5m`, want: `(` + window + ` offset 10s * 30)`},
		{
			name: "in aggregations and calls",
			expr: `max by (job) (` + window + `) + clamp_min(-` + window + `, 1)`,
			want: `max by (job) ((` + window + ` * 30)) + clamp_min(-(` + window + ` * 30), 1)`,
		},
		{name: "in a subquery", expr: `max_over_time((` + window + ` > 0)[10m:1m])`, want: `max_over_time(((` + window + ` * 30) > 0)[20s:2s])`},
		{name: "other metrics untouched", expr: `rate(x_total[5m]) / other_window_seconds`, want: `rate(x_total[10s]) / other_window_seconds`},
		{name: "range selector refused", expr: `max_over_time(` + window + `[5m])`},
		{name: "name regex refused", expr: `{__name__=~"warden_auth_.+"}`},
	}
	dir := t.TempDir()
	p := parser.NewParser(parser.Options{})
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := filepath.Join(dir, fmt.Sprintf("case%d.rules.yml", i))
			rule := map[string]any{"groups": []any{map[string]any{"name": "g", "rules": []any{map[string]any{"alert": "A", "expr": c.expr}}}}}
			raw, err := yaml.Marshal(rule)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(src, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, fmt.Sprintf("out%d", i))
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			files, err := compressRules([]string{src}, out, 30, 5*time.Second, []string{window})
			if c.want == "" {
				if err == nil || !strings.Contains(err.Error(), window) {
					t.Fatalf("compressRules(%s): error %v, want one naming %s", c.expr, err, window)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Both sides parsed: the written expression is valid PromQL and
			// means what is wanted, whatever the printer's spacing.
			written := readRules(t, files[0])[0]["expr"]
			gotExpr, err := p.ParseExpr(written)
			if err != nil {
				t.Fatalf("written expression %q: %v", written, err)
			}
			wantExpr, err := p.ParseExpr(c.want)
			if err != nil {
				t.Fatalf("want %q: %v", c.want, err)
			}
			if gotExpr.String() != wantExpr.String() {
				t.Errorf("%s\nbecame %s\nwant   %s", c.expr, gotExpr, wantExpr)
			}
		})
	}
}

// TestCompressedBruteForceThreshold evaluates the demo's compressed
// BruteForceSource with promtool: with the exporter's 10 s window standing
// for 5 minutes, the threshold of 10 failed logins per minute is 50 in the
// window, pinned by 49 (silent) and 51 (fires after the compressed
// for of 4 s).
func TestCompressedBruteForceThreshold(t *testing.T) {
	promtool := testenv.Promtool(t)
	dir := t.TempDir()
	files, err := compressRules([]string{"../../rules/auth.rules.yml"}, dir, 30, 5*time.Second, compressedDurationMetrics)
	if err != nil {
		t.Fatal(err)
	}
	test := `rule_files: [` + filepath.Base(files[0]) + `]
evaluation_interval: 1s
tests:
  - interval: 1s
    input_series:
      - series: 'warden_auth_failed_logins_window_seconds{instance="e:9877"}'
        values: '10x20'
      - series: 'warden_auth_failed_logins_by_source{instance="e:9877", source="198.51.100.1"}'
        values: '49x20'
      - series: 'warden_auth_failed_logins_by_source{instance="e:9877", source="198.51.100.2"}'
        values: '51x20'
    alert_rule_test:
      - eval_time: 3s
        alertname: BruteForceSource
        exp_alerts: []
      - eval_time: 4s
        alertname: BruteForceSource
        exp_alerts: &fired
          - exp_labels: {instance: "e:9877", source: "198.51.100.2", severity: warning}
            exp_annotations:
              summary: "Repeated failed logins from 198.51.100.2"
              description: "198.51.100.2 failed 10.2 logins per minute over the exporter's sliding window (threshold 10 per minute), as seen by e:9877."
              runbook_url: "https://github.com/warden-sre/warden/blob/main/docs/runbooks/BruteForceSource.md"
      - eval_time: 20s
        alertname: BruteForceSource
        exp_alerts: *fired
`
	testFile := filepath.Join(dir, "brute-force.test.yml")
	if err := os.WriteFile(testFile, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestCompressedProjectRulesPassPromtool compresses rules/ as the demo does
// and checks the result with promtool, so the demo never loads rules
// Prometheus would reject.
func TestCompressedProjectRulesPassPromtool(t *testing.T) {
	promtool := testenv.Promtool(t)
	src, _ := filepath.Glob("../../rules/*.rules.yml")
	if len(src) == 0 {
		t.Fatal("no rules/*.rules.yml")
	}
	files, err := compressRules(src, t.TempDir(), 30, 5*time.Second, compressedDurationMetrics)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestDemoConfigsAreValid renders deploy/demo's templates with sample
// values and loads them with the code that will read them.
func TestDemoConfigsAreValid(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := newPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]any{
		"PostgresDSN":         verifyFull("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", ca.rootFile),
		"PostgresReplicaDSN":  verifyFull("postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable", ca.rootFile),
		"PostgresAddr":        "127.0.0.1:5432",
		"PostgresReplicaAddr": "127.0.0.1:5433",
		"RedisAddr":           "127.0.0.1:6379",
		"RedisTLSAddr":        "127.0.0.1:6380",
		"RootCAFile":          ca.rootFile,
		"CertsDir":            ca.pemDir,
		"Kubeconfig":          filepath.Join(dir, "kubeconfig"),
		"Namespace":           Namespace,
		"AuthLogs":            []string{filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")},
		"Cooldown":            "45s",
		"VerifyWindow":        "30s",
		"RecentRollout":       "20s",
		"RepeatInterval":      "10s",
		"RemediatorURLs":      []string{"http://127.0.0.1:1/api/v1/alerts", "http://127.0.0.1:2/api/v1/alerts"},
		"TokenFile":           token,
		"PagerURL":            "http://127.0.0.1:3/",
		"GatewayReloadPort":   4,
	}
	render := func(name string) []byte {
		var b bytes.Buffer
		if err := RenderConfig(filepath.Join("../../deploy/demo", name), &b, data); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	cfg, err := exporter.ParseConfig(render("warden-exporter.yml"))
	if err != nil {
		t.Fatalf("warden-exporter.yml: %v", err)
	}
	if cfg.Auth == nil || len(cfg.Auth.Files) != 2 {
		t.Errorf("warden-exporter.yml: auth files not rendered: %+v", cfg.Auth)
	}
	// Every collector is configured, so every dashboard has data. Read
	// through the YAML keys, which stay put when the config types move.
	var keys struct {
		Postgres []struct {
			Statements struct{ Enabled bool } `yaml:"statements"`
		} `yaml:"postgres"`
		Redis []any `yaml:"redis"`
		Certs struct {
			Endpoints struct {
				Targets []any `yaml:"targets"`
			} `yaml:"endpoints"`
			Files      map[string]any `yaml:"files"`
			Kubernetes map[string]any `yaml:"kubernetes"`
		} `yaml:"certs"`
	}
	if err := yaml.Unmarshal(render("warden-exporter.yml"), &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys.Postgres) != 2 || !keys.Postgres[0].Statements.Enabled || len(keys.Redis) != 1 ||
		len(keys.Certs.Endpoints.Targets) != 3 || keys.Certs.Files == nil || keys.Certs.Kubernetes == nil {
		t.Errorf("warden-exporter.yml: want two PostgreSQL targets (statements on the primary), Redis and all three certificate sources, got %+v", keys)
	}
	p, err := remediator.ParsePolicy(render("policy.yml"))
	if err != nil {
		t.Fatalf("policy.yml: %v", err)
	}
	if len(p.Rules) != 3 || len(p.Redis) != 1 || !p.Redis[0].Enabled {
		t.Errorf("policy.yml: want 3 rules and an enabled Redis target, got %+v", p)
	}
	if len(p.Rules[0].BlockWhen) != 1 || !strings.Contains(p.Rules[0].BlockWhen[0][0], "DatabaseDown") || p.Gates.RecentRollout != 20*time.Second {
		t.Errorf("policy.yml: want the restart rule blocked while DatabaseDown fires and recent_rollout 20s, got block_when %v, gates %+v", p.Rules[0].BlockWhen, p.Gates)
	}

	amtool := testenv.Tool(t, "amtool", "AMTOOL")
	am := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(am, render("alertmanager.yml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(amtool, "check-config", am).CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}

	// A missing value is an error, not an empty string in a config.
	delete(data, "RedisAddr")
	var b bytes.Buffer
	if err := RenderConfig("../../deploy/demo/policy.yml", &b, data); err == nil {
		t.Error("rendering without RedisAddr succeeded")
	}
}

func TestLoadDashboardsReadsVariablesAndNestedPanels(t *testing.T) {
	boards, err := LoadDashboards("../../dashboards")
	if err != nil {
		t.Fatal(err)
	}
	titles := map[string]Dashboard{}
	for _, b := range boards {
		titles[filepath.Base(b.File)] = b
		if b.Title == "" || len(b.Panels) == 0 || len(b.Variables) == 0 {
			t.Errorf("%s: title %q, %d panels, %d variables", b.File, b.Title, len(b.Panels), len(b.Variables))
		}
		for _, p := range b.Panels {
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" {
					t.Errorf("%s: panel %q: target %+v without expr or refId", b.File, p.Title, tg)
				}
			}
		}
	}
	certs, ok := titles["warden-certificates.json"]
	if len(boards) != 4 || !ok {
		t.Fatalf("want the four dashboards, got %v", titles)
	}
	var instance DashboardVariable
	for _, v := range certs.Variables {
		if v.Name == "instance" {
			instance = v
		}
	}
	if instance.Query != "label_values(x509_cert_not_after, instance)" || instance.AllValue != ".*" {
		t.Errorf("certificates: variable instance = %+v", instance)
	}
}
