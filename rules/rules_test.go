// Package rules holds the tests of warden's Prometheus alerting and
// recording rules (*.rules.yml) and their promtool unit tests (tests/).
package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/internal/inventory"
	"github.com/warden-sre/warden/internal/testenv"
)

const (
	runbookURLPrefix = "https://github.com/warden-sre/warden/blob/main/docs/runbooks/"
	runbookDir       = "../docs/runbooks"
)

// runbookSections are the headings every runbook has, in this order.
var runbookSections = []string{"Meaning", "Confirm", "Level-1 action", "Escalate"}

// stateAlerts fire on a yes/no condition (a target is down, a breaker is
// open); their value is 0 or 1 and is not worth printing. Every other
// alert's description shows its value, humanized.
var stateAlerts = map[string]bool{
	"ServiceDown":                  true,
	"DatabaseDown":                 true,
	"RedisDown":                    true,
	"ExporterDown":                 true,
	"ExporterConfigReloadFailed":   true,
	"RemediatorDown":               true,
	"RemediatorCircuitBreakerOpen": true,
	"RemediatorConfigReloadFailed": true,
	"ServiceJobDown":               true,
	"AuthLogFollowerStalled":       true,
	"KubernetesMetricsAbsent":      true,
	"CertificateSourceUnreadable":  true,
	"CertificateChainNotVerified":  true,
	"CertificateServedStale":       true,
	"PostgresReplicaDisconnected":  true,
	"RedisReplicaLinkDown":         true,
	"RedisRdbSaveFailed":           true,
	"Watchdog":                     true,
	"KubePodCrashLooping":          true,
	"KubeDeploymentRolloutStuck":   true,
}

// remediableAlerts are the alerts warden-remediator's policy can act on,
// with the labels it needs to find the workload or Redis instance. At least
// one firing promtool case of each must show all of them.
var remediableAlerts = map[string][]string{
	"ServiceDown":              {"namespace", "deployment", "pod"},
	"HighErrorRate":            {"namespace", "deployment"},
	"HighMemoryUsage":          {"namespace", "deployment", "pod", "container"},
	"RedisMemoryNearMaxmemory": {"target"},
	"RedisEvictions":           {"target"},
}

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval"`
	Rules    []rule `yaml:"rules"`
}

type rule struct {
	Record        string            `yaml:"record"`
	Alert         string            `yaml:"alert"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`

	file string
}

// testFile is the part of promtool's unit test format these tests read.
type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name      string `yaml:"name"`
		AlertRule []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.rules.yml files in rules/")
	}
	return files
}

func testFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("tests/*.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no tests/*.test.yml files in rules/")
	}
	return files
}

// loadRules decodes every rule file strictly: a misspelt field fails here
// before Prometheus would refuse the file.
func loadRules(t *testing.T) []rule {
	t.Helper()
	var rules []rule
	groups := map[string]string{}
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf ruleFile
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&rf); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("%s: %v", f, err)
		}
		if len(rf.Groups) == 0 {
			t.Errorf("%s: no rule groups", f)
		}
		for _, g := range rf.Groups {
			if prev, dup := groups[g.Name]; dup {
				t.Errorf("%s: group %q is already defined in %s", f, g.Name, prev)
			}
			groups[g.Name] = f
			for _, r := range g.Rules {
				r.file = f
				rules = append(rules, r)
			}
		}
	}
	return rules
}

func loadTests(t *testing.T) map[string]testFile {
	t.Helper()
	out := map[string]testFile{}
	for _, f := range testFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tf testFile
		if err := yaml.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = tf
	}
	return out
}

func alerts(rules []rule) []rule {
	var out []rule
	for _, r := range rules {
		if r.Alert != "" {
			out = append(out, r)
		}
	}
	return out
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(testenv.Promtool(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, append([]string{"check", "rules", "--lint=all", "--lint-fatal"}, ruleFiles(t)...)...)
}

func TestPromtoolTestRules(t *testing.T) {
	runPromtool(t, append([]string{"test", "rules"}, testFiles(t)...)...)
}

func TestAlertsFollowConventions(t *testing.T) {
	humanizedValue := regexp.MustCompile(`\{\{\s*\$value\s*\|\s*(humanize|humanizePercentage|humanizeDuration|humanize1024)\s*\}\}`)
	camelCase := regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
	severities := map[string]bool{"critical": true, "warning": true, "info": true}
	seen := map[string]string{}
	for _, a := range alerts(loadRules(t)) {
		where := fmt.Sprintf("%s: alert %s", a.file, a.Alert)
		if prev, dup := seen[a.Alert]; dup {
			t.Errorf("%s: also defined in %s; one alert, one runbook", where, prev)
		}
		seen[a.Alert] = a.file
		if !camelCase.MatchString(a.Alert) {
			t.Errorf("%s: alert names are CamelCase", where)
		}
		if sev := a.Labels["severity"]; !severities[sev] {
			t.Errorf("%s: label severity is %q; want critical, warning or info", where, sev)
		}
		if a.For == "" {
			t.Errorf("%s: no `for`; every alert waits before firing so that it does not flap", where)
		} else if d, err := model.ParseDuration(a.For); err != nil || d <= 0 {
			t.Errorf("%s: for %q is not a positive duration", where, a.For)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s: annotation %s is missing", where, k)
			}
		}
		if want := runbookURLPrefix + a.Alert + ".md"; a.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url is %q; want %q", where, a.Annotations["runbook_url"], want)
		}
		desc := a.Annotations["description"]
		switch {
		case stateAlerts[a.Alert] && strings.Contains(desc, "$value"):
			t.Errorf("%s: a yes/no alert; its value is not worth printing", where)
		case !stateAlerts[a.Alert] && !humanizedValue.MatchString(desc):
			t.Errorf("%s: description must show the value humanized ({{ $value | humanize... }}): %q", where, desc)
		}
	}
}

func TestEveryAlertIsTestedFiringAndSilent(t *testing.T) {
	defined := map[string]bool{}
	for _, a := range alerts(loadRules(t)) {
		defined[a.Alert] = true
	}
	firing, silent := map[string]bool{}, map[string]bool{}
	labelled := map[string]bool{}
	for file, tf := range loadTests(t) {
		for _, tc := range tf.Tests {
			for _, ar := range tc.AlertRule {
				if !defined[ar.Alertname] {
					t.Errorf("%s: test %q checks alert %q, which no rule file defines", file, tc.Name, ar.Alertname)
					continue
				}
				if len(ar.ExpAlerts) == 0 {
					silent[ar.Alertname] = true
					continue
				}
				firing[ar.Alertname] = true
				for _, exp := range ar.ExpAlerts {
					if len(exp.ExpLabels) == 0 || len(exp.ExpAnnotations) == 0 {
						t.Errorf("%s: test %q expects %s without exact labels and annotations", file, tc.Name, ar.Alertname)
					}
					if need, ok := remediableAlerts[ar.Alertname]; ok && hasAll(exp.ExpLabels, need) {
						labelled[ar.Alertname] = true
					}
				}
			}
		}
	}
	names := sortedKeys(defined)
	for _, a := range names {
		if !firing[a] {
			t.Errorf("alert %s: no promtool case where it fires (non-empty exp_alerts)", a)
		}
		if !silent[a] {
			t.Errorf("alert %s: no promtool case where it stays silent (empty exp_alerts)", a)
		}
	}
	for a, need := range remediableAlerts {
		if !defined[a] {
			t.Errorf("alert %s: the remediator acts on it, but no rule defines it", a)
			continue
		}
		if !labelled[a] {
			t.Errorf("alert %s: no firing case shows the labels the remediator needs: %v", a, need)
		}
	}
}

func hasAll(labels map[string]string, names []string) bool {
	for _, n := range names {
		if labels[n] == "" {
			return false
		}
	}
	return true
}

func TestEveryAlertHasARunbook(t *testing.T) {
	defined := map[string]bool{}
	for _, a := range alerts(loadRules(t)) {
		defined[a.Alert] = true
		path := filepath.Join(runbookDir, a.Alert+".md")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("alert %s: runbook %s: %v", a.Alert, path, err)
			continue
		}
		if err := checkRunbook(a.Alert, string(b)); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	pages, err := filepath.Glob(filepath.Join(runbookDir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		name := strings.TrimSuffix(filepath.Base(p), ".md")
		if name != "README" && !defined[name] {
			t.Errorf("%s: no alert is named %s", p, name)
		}
	}
}

// checkRunbook wants the alert's name as the title and the sections in
// order, each with some text.
func checkRunbook(alert, text string) error {
	lines := strings.Split(text, "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "# "+alert {
		return fmt.Errorf("the first line must be %q", "# "+alert)
	}
	var headings []string
	body := map[string]int{}
	current := ""
	for _, l := range lines[1:] {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			current = strings.TrimSpace(h)
			headings = append(headings, current)
			continue
		}
		if strings.TrimSpace(l) != "" && current != "" {
			body[current] += len(strings.TrimSpace(l))
		}
	}
	next := 0
	for _, h := range headings {
		if next < len(runbookSections) && h == runbookSections[next] {
			next++
		}
	}
	if next < len(runbookSections) {
		return fmt.Errorf("sections %v must appear as \"## \" headings in this order; found %v", runbookSections, headings)
	}
	for _, s := range runbookSections {
		if body[s] < 40 {
			return fmt.Errorf("section %q says next to nothing", s)
		}
	}
	return nil
}

func TestCheckRunbook(t *testing.T) {
	good := "# X\n\n## Meaning\n" + strings.Repeat("m", 50) + "\n## Confirm\n" + strings.Repeat("c", 50) +
		"\n## Level-1 action\n" + strings.Repeat("l", 50) + "\n## Escalate\n" + strings.Repeat("e", 50) + "\n"
	tests := []struct {
		name, text, wantErr string
	}{
		{"complete", good, ""},
		{"wrong title", strings.Replace(good, "# X", "# Y", 1), "first line"},
		{"missing section", strings.Replace(good, "## Confirm", "## Check", 1), "must appear"},
		{"sections out of order", "# X\n## Confirm\nx\n## Meaning\nx\n## Escalate\nx\n## Level-1 action\nx\n", "must appear"},
		{"empty section", strings.Replace(good, strings.Repeat("e", 50), "", 1), `"Escalate" says next to nothing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkRunbook("X", tt.text)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestRulesUseOnlyKnownMetrics parses every expression and checks each
// metric name against what warden's components, the auth-service contract
// and the listed external exporters produce; a typo fails here.
func TestRulesUseOnlyKnownMetrics(t *testing.T) {
	recorded := map[string]bool{}
	for _, r := range loadRules(t) {
		name := r.Alert
		if r.Record != "" {
			name = r.Record
			recorded[r.Record] = true
			if strings.Count(r.Record, ":") != 2 {
				t.Errorf("%s: recording rule %s: names follow level:metric:operations", r.file, r.Record)
			}
		}
		if _, err := inventory.Check(r.Expr); err != nil {
			t.Errorf("%s: %s: %v", r.file, name, err)
		}
	}
	var listed []string
	for _, m := range inventory.BySource(inventory.Recording) {
		listed = append(listed, m.Name)
		if !recorded[m.Name] {
			t.Errorf("internal/inventory lists recording rule %s, which no rule file records", m.Name)
		}
	}
	for _, r := range sortedKeys(recorded) {
		if !slices.Contains(listed, r) {
			t.Errorf("recording rule %s is missing from internal/inventory", r)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
