package mutate

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

func TestGenerate(t *testing.T) {
	r := Rule{
		Name:  "X",
		Alert: true,
		Expr: `sum by (namespace, job) (rate(a_total{job=~"a|b", status!="200"}[5m])) / on (namespace, job) (b > 0) > 0.05
and on (namespace, job) min_over_time(c[1h]) >= 0.1`,
		For:    "2m",
		Labels: map[string]string{"severity": "critical"},
	}
	muts, err := Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	var descs []string
	for _, m := range muts {
		descs = append(descs, m.Desc)
		if m.Expr != "" {
			if _, err := parse(m.Expr); err != nil {
				t.Errorf("%s: mutant does not parse: %v\n%s", m.Desc, err, m.Expr)
			}
		}
	}
	for _, want := range []string{
		"number 0.05 -> 0.1",
		"number 0.05 -> 0.025",
		"number 0.1 -> 0.2",
		"comparison > -> <",
		"filter dropped: b > 0",
		"and arm dropped: min_over_time(c[1h]) >= 0.1",
		"on(namespace, job): job dropped",
		`matcher job=~"a|b" dropped from a_total`,
		`matcher status!="200" -> status="200" in a_total`,
		`regex alternative "a" dropped from job=~"a|b" in a_total`,
		"range [5m] -> [2m30s] on a_total{job=~\"a|b\",status!=\"200\"}",
		"range [1h] -> [2h] on c",
		"aggregation sum -> max by (namespace, job)",
		"sum by(namespace, job): namespace dropped",
		"function rate -> irate",
		"function min_over_time -> max_over_time",
		"for 2m dropped",
		"for 2m -> 1m",
		"for 2m -> 4m",
		`label severity="critical" -> "warning"`,
	} {
		if !slices.Contains(descs, want) {
			t.Errorf("no mutant %q among:\n%s", want, strings.Join(descs, "\n"))
		}
	}
	seen := map[string]bool{}
	for _, d := range descs {
		if seen[d] {
			t.Errorf("two mutants are described as %q", d)
		}
		seen[d] = true
	}
}

func TestTopLevelAlternatives(t *testing.T) {
	for re, want := range map[string][]string{
		"a|b":      {"a", "b"},
		"5..":      {"5.."},
		"(a|b)c|d": {"(a|b)c", "d"},
		`[|]x|y`:   {"[|]x", "y"},
		`a\|b|c`:   {`a\|b`, "c"},
	} {
		if got := topLevelAlternatives(re); !slices.Equal(got, want) {
			t.Errorf("topLevelAlternatives(%q) = %q; want %q", re, got, want)
		}
	}
}

// TestEveryNonEquivalentMutantIsKilled mutates every rule in rules/ and
// runs promtool against each mutant. Survivors must be listed, with a
// reason, in equivalent.yml; a listed mutant that is killed or no longer
// generated must be removed from it. MUTATE_WORKERS sets the number of
// mutants tested at once (default: the number of CPUs); MUTATE_FILES
// (comma-separated rule file names) narrows the run while working on a file.
func TestEveryNonEquivalentMutantIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs promtool for every mutant of every rule")
	}
	suite := Suite{Dir: "..", Promtool: testenv.Promtool(t), Workers: runtime.NumCPU()}
	if w := os.Getenv("MUTATE_WORKERS"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 {
			t.Fatalf("MUTATE_WORKERS=%q: want a positive number", w)
		}
		suite.Workers = n
	}
	targets, err := suite.Targets()
	if err != nil {
		t.Fatal(err)
	}
	if only := os.Getenv("MUTATE_FILES"); only != "" {
		files := strings.Split(only, ",")
		targets = slices.DeleteFunc(targets, func(t *Target) bool { return !slices.Contains(files, t.File) })
	}
	f, err := os.Open("equivalent.yml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	eqs, err := ReadEquivalents(f)
	if err != nil {
		t.Fatalf("equivalent.yml: %v", err)
	}
	equivalent := map[[2]string]bool{}
	for _, e := range eqs {
		equivalent[[2]string{e.Rule, e.Mutant}] = true
	}

	results, err := suite.Run(t.Context(), targets)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + Report(results, equivalent))

	generated := map[[2]string]bool{}
	for _, r := range results {
		key := [2]string{r.Target.Rule.Name, r.Mutant.Desc}
		generated[key] = true
		switch {
		case !r.Killed && !equivalent[key]:
			t.Errorf("%s: %s: mutant survived (%s); pin it with a test, or list it in equivalent.yml with the reason it cannot change behaviour", r.Target.File, r.Target.Rule.Name, r.Mutant.Desc)
		case r.Killed && equivalent[key]:
			t.Errorf("equivalent.yml lists %s %q, but %s kills it: remove it from the list", key[0], key[1], r.By)
		}
	}
	if os.Getenv("MUTATE_FILES") == "" {
		for _, e := range eqs {
			if !generated[[2]string{e.Rule, e.Mutant}] {
				t.Errorf("equivalent.yml lists %s %q, which is no longer generated: remove it", e.Rule, e.Mutant)
			}
		}
	}
}

func TestApplyEditsOneRule(t *testing.T) {
	src := []byte(`groups:
  - name: g
    rules:
      - record: r:x:y
        expr: sum(x)
      - alert: A
        expr: x > 1
        for: 2m
        labels:
          severity: critical
`)
	target := &Target{Group: 0, Index: 1}
	for _, tt := range []struct {
		m          Mutant
		want, gone string
	}{
		{Mutant{Expr: "x > 2"}, `expr: "x > 2"`, "x > 1"},
		{Mutant{Field: &FieldChange{Key: "for", Delete: true}}, "", "for:"},
		{Mutant{Field: &FieldChange{Key: "for", Value: "1m"}}, "for: 1m", "2m"},
		{Mutant{Field: &FieldChange{Key: "labels.severity", Value: "warning"}}, "severity: warning", "critical"},
	} {
		out, err := apply(src, target, tt.m)
		if err != nil {
			t.Fatalf("%+v: %v", tt.m, err)
		}
		if !strings.Contains(string(out), tt.want) || strings.Contains(string(out), tt.gone) {
			t.Errorf("%+v: got\n%s\nwant %q and no %q", tt.m, out, tt.want, tt.gone)
		}
		if !strings.Contains(string(out), "expr: sum(x)") {
			t.Errorf("%+v: the other rule changed:\n%s", tt.m, out)
		}
	}
}
