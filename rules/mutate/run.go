package mutate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/internal/yamlnode"
)

// Suite is a directory of rule files (*.rules.yml) with promtool unit
// tests in tests/*.test.yml that name them as ../<file>.
type Suite struct {
	Dir string
	// Promtool is the promtool binary.
	Promtool string
	// Workers is the number of mutants tested at once.
	Workers int
}

// Target is one rule of one file, with its mutants.
type Target struct {
	File    string // base name, e.g. auth.rules.yml
	Group   int
	Index   int // in the group
	Rule    Rule
	Mutants []Mutant
}

// Result is the verdict on one mutant.
type Result struct {
	Target *Target
	Mutant Mutant
	Killed bool
	// By names what killed it: "check" or a test file.
	By  string
	Err error // an error running promtool itself (not a verdict)
}

type ruleYAML struct {
	Record        string            `yaml:"record"`
	Alert         string            `yaml:"alert"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
}

// Targets reads every rule file of the suite and generates the mutants.
// A recording rule recorded by several rules is told apart by its
// position: "name[2]".
func (s Suite) Targets() ([]*Target, error) {
	files, err := filepath.Glob(filepath.Join(s.Dir, "*.rules.yml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.rules.yml in %s", s.Dir)
	}
	var out []*Target
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var rf struct {
			Groups []struct {
				Rules []ruleYAML `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for g, grp := range rf.Groups {
			for i, r := range grp.Rules {
				name := r.Alert
				if name == "" {
					name = r.Record
				}
				seen[name]++
				if n := seen[name]; n > 1 {
					name = fmt.Sprintf("%s[%d]", name, n)
				}
				rule := Rule{Name: name, Alert: r.Alert != "", Expr: r.Expr, For: r.For, KeepFiringFor: r.KeepFiringFor, Labels: r.Labels}
				muts, err := Generate(rule)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", f, err)
				}
				out = append(out, &Target{File: filepath.Base(f), Group: g, Index: i, Rule: rule, Mutants: muts})
			}
		}
	}
	return out, nil
}

// testsFor maps each rule file to the test files that load it, in the
// order they should run: the file's own tests first (where most mutants
// die), then the others by name.
func (s Suite) testsFor() (map[string][]string, error) {
	tests, err := filepath.Glob(filepath.Join(s.Dir, "tests", "*.test.yml"))
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, t := range tests {
		b, err := os.ReadFile(t)
		if err != nil {
			return nil, err
		}
		var tf struct {
			RuleFiles []string `yaml:"rule_files"`
		}
		if err := yaml.Unmarshal(b, &tf); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		for _, rf := range tf.RuleFiles {
			out[filepath.Base(rf)] = append(out[filepath.Base(rf)], filepath.Base(t))
		}
	}
	for rf, ts := range out {
		own := strings.TrimSuffix(rf, ".rules.yml") + ".test.yml"
		sort.Slice(ts, func(i, j int) bool {
			if (ts[i] == own) != (ts[j] == own) {
				return ts[i] == own
			}
			return ts[i] < ts[j]
		})
	}
	return out, nil
}

// Run tests every mutant of targets and returns one result per mutant, in
// the targets' order. It first checks that the unmutated suite passes.
func (s Suite) Run(ctx context.Context, targets []*Target) ([]Result, error) {
	tests, err := s.testsFor()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "rules-mutate-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	suite, err := s.readSuite()
	if err != nil {
		return nil, err
	}

	// The unmutated suite must pass, or every mutant would look killed.
	// Each file is checked as the mutants are written (every expression
	// parsed, printed and re-encoded), so that a rewrite that broke a file
	// cannot pass for a kill of all its mutants.
	base := filepath.Join(work, "base")
	checked := map[string]bool{}
	for _, t := range targets {
		if checked[t.File] {
			continue
		}
		checked[t.File] = true
		if err := os.RemoveAll(base); err != nil {
			return nil, err
		}
		if err := writeSuite(base, suite, t.File, rewriteUnchanged); err != nil {
			return nil, fmt.Errorf("rewrite %s: %w", t.File, err)
		}
		killed, by, err := s.verdict(ctx, base, t.File, tests[t.File])
		if err != nil {
			return nil, fmt.Errorf("unmutated %s: %w", t.File, err)
		}
		if killed {
			return nil, fmt.Errorf("the unmutated rules fail %s (%s): fix them before mutating", by, t.File)
		}
	}

	type job struct {
		t *Target
		m Mutant
		i int
	}
	var jobs []job
	for _, t := range targets {
		for _, m := range t.Mutants {
			jobs = append(jobs, job{t, m, len(jobs)})
		}
	}
	results := make([]Result, len(jobs))
	ch := make(chan job)
	var wg sync.WaitGroup
	workers := max(s.Workers, 1)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(work, fmt.Sprintf("w%d", w))
			for j := range ch {
				r := Result{Target: j.t, Mutant: j.m}
				if err := os.RemoveAll(dir); err != nil {
					r.Err = err
				} else if err := writeSuite(dir, suite, j.t.File, func(b []byte) ([]byte, error) { return apply(b, j.t, j.m) }); err != nil {
					r.Err = err
				} else {
					r.Killed, r.By, r.Err = s.verdict(ctx, dir, j.t.File, tests[j.t.File])
				}
				results[j.i] = r
			}
		}()
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.Target.Rule.Name, r.Mutant.Desc, r.Err))
		}
	}
	return results, errors.Join(errs...)
}

// verdict runs each test file that loads the rule file, one promtool
// process per file, until one fails. `promtool test rules` loads the rule
// file itself, so a mutant promtool rejects fails there; `promtool check
// rules` runs only for a rule file no test loads.
func (s Suite) verdict(ctx context.Context, dir, ruleFile string, tests []string) (killed bool, by string, err error) {
	if len(tests) > 0 {
		return s.runTests(ctx, dir, tests)
	}
	if out, err := s.promtool(ctx, dir, "check", "rules", ruleFile); err != nil {
		if isExit(err) {
			return true, "check", nil
		}
		return false, "check", fmt.Errorf("%w: %s", err, out)
	}
	return false, "", nil
}

func (s Suite) runTests(ctx context.Context, dir string, tests []string) (killed bool, by string, err error) {
	for _, t := range tests {
		if out, err := s.promtool(ctx, dir, "test", "rules", filepath.Join("tests", t)); err != nil {
			if isExit(err) {
				return true, t, nil
			}
			return false, t, fmt.Errorf("%w: %s", err, out)
		}
	}
	return false, "", nil
}

func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}

func (s Suite) promtool(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, s.Promtool, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// suiteFile is a rule or test file of the suite: its path relative to
// the suite's directory and its content.
type suiteFile struct {
	rel  string
	data []byte
}

// readSuite reads the rule and test files once, for every copy of the
// suite that Run writes.
func (s Suite) readSuite() ([]suiteFile, error) {
	var out []suiteFile
	for _, pattern := range []string{"*.rules.yml", filepath.Join("tests", "*.test.yml")} {
		files, err := filepath.Glob(filepath.Join(s.Dir, pattern))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			rel, err := filepath.Rel(s.Dir, f)
			if err != nil {
				return nil, err
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, suiteFile{rel: rel, data: b})
		}
	}
	return out, nil
}

// writeSuite writes the suite's files into dst, passing the rule file
// named mutated through edit.
func writeSuite(dst string, files []suiteFile, mutated string, edit func([]byte) ([]byte, error)) error {
	if err := os.MkdirAll(filepath.Join(dst, "tests"), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		b := f.data
		if f.rel == mutated && edit != nil {
			var err error
			if b, err = edit(b); err != nil {
				return fmt.Errorf("%s: %w", f.rel, err)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, f.rel), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// apply writes mutant m of target t into the rule file's text.
func apply(src []byte, t *Target, m Mutant) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	groups := yamlnode.MapValue(doc.Content[0], "groups")
	if groups == nil || t.Group >= len(groups.Content) {
		return nil, fmt.Errorf("group %d not found", t.Group)
	}
	rules := yamlnode.MapValue(groups.Content[t.Group], "rules")
	if rules == nil || t.Index >= len(rules.Content) {
		return nil, fmt.Errorf("rule %d of group %d not found", t.Index, t.Group)
	}
	r := rules.Content[t.Index]
	switch {
	case m.Expr != "":
		e := yamlnode.MapValue(r, "expr")
		e.Value, e.Style = m.Expr, yaml.DoubleQuotedStyle
	case m.Field != nil:
		key, parent := m.Field.Key, r
		if l, ok := strings.CutPrefix(key, "labels."); ok {
			key, parent = l, yamlnode.MapValue(r, "labels")
		}
		if parent == nil {
			return nil, fmt.Errorf("no field %s", m.Field.Key)
		}
		k := slices.IndexFunc(parent.Content, func(n *yaml.Node) bool { return n.Value == key })
		if k < 0 || k%2 != 0 {
			return nil, fmt.Errorf("no field %s", m.Field.Key)
		}
		if m.Field.Delete {
			parent.Content = slices.Delete(parent.Content, k, k+2)
		} else {
			parent.Content[k+1].Value = m.Field.Value
		}
	default:
		return nil, errors.New("empty mutant")
	}
	return encode(&doc)
}

// encode writes a rule file the way every mutant is written.
func encode(doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// rewriteUnchanged writes a rule file as the mutants are written, with
// every expression parsed and printed but nothing mutated.
func rewriteUnchanged(src []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	groups := yamlnode.MapValue(doc.Content[0], "groups")
	if groups == nil {
		return nil, errors.New("no groups")
	}
	for _, g := range groups.Content {
		rules := yamlnode.MapValue(g, "rules")
		if rules == nil {
			continue
		}
		for _, r := range rules.Content {
			e := yamlnode.MapValue(r, "expr")
			if e == nil {
				continue
			}
			expr, err := parse(e.Value)
			if err != nil {
				return nil, fmt.Errorf("expr %q: %w", e.Value, err)
			}
			e.Value, e.Style = expr.String(), yaml.DoubleQuotedStyle
		}
	}
	return encode(&doc)
}

// Equivalent is a survivor that no test can kill because it behaves like
// the original rule, with the reason.
type Equivalent struct {
	Rule   string `yaml:"rule"`
	Mutant string `yaml:"mutant"`
	Reason string `yaml:"reason"`
}

// ReadEquivalents reads the list of equivalent mutants.
func ReadEquivalents(r io.Reader) ([]Equivalent, error) {
	var out []Equivalent
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&out); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for _, e := range out {
		if e.Rule == "" || e.Mutant == "" || strings.TrimSpace(e.Reason) == "" {
			return nil, fmt.Errorf("equivalent mutant %+v: rule, mutant and reason are required", e)
		}
	}
	return out, nil
}

// Report summarises results by file and by rule. Equivalent mutants count
// neither as killed nor in the total of the "non-equivalent" score.
func Report(results []Result, equivalent map[[2]string]bool) string {
	var b strings.Builder
	type agg struct{ killed, total, equiv int }
	files := map[string]*agg{}
	var fileOrder []string
	var rec, all agg
	perRule := map[string][]string{}
	ruleScore := map[string]*agg{}
	var ruleOrder []string
	for _, r := range results {
		f := r.Target.File
		if files[f] == nil {
			files[f] = &agg{}
			fileOrder = append(fileOrder, f)
		}
		key := f + " " + r.Target.Rule.Name
		if _, ok := ruleScore[key]; !ok {
			ruleOrder = append(ruleOrder, key)
			ruleScore[key] = &agg{}
		}
		eq := equivalent[[2]string{r.Target.Rule.Name, r.Mutant.Desc}]
		aggs := []*agg{files[f], &all, ruleScore[key]}
		if !r.Target.Rule.Alert {
			aggs = append(aggs, &rec)
		}
		for _, a := range aggs {
			a.total++
			if r.Killed {
				a.killed++
			} else if eq {
				a.equiv++
			}
		}
		if !r.Killed {
			mark := "SURVIVED"
			if eq {
				mark = "equivalent"
			}
			perRule[key] = append(perRule[key], fmt.Sprintf("      %s: %s", mark, r.Mutant.Desc))
		}
	}
	pct := func(a agg) string {
		if a.total == 0 {
			return "-"
		}
		s := fmt.Sprintf("%d/%d killed (%.1f%%)", a.killed, a.total, 100*float64(a.killed)/float64(a.total))
		if a.equiv > 0 {
			s += fmt.Sprintf(", %d equivalent, %.1f%% of the rest", a.equiv, 100*float64(a.killed)/float64(a.total-a.equiv))
		}
		return s
	}
	fmt.Fprintf(&b, "mutation score by rule file:\n")
	for _, f := range fileOrder {
		fmt.Fprintf(&b, "  %-26s %s\n", f, pct(*files[f]))
	}
	fmt.Fprintf(&b, "  %-26s %s\n", "recording rules", pct(rec))
	fmt.Fprintf(&b, "  %-26s %s\n", "all", pct(all))
	fmt.Fprintf(&b, "by rule (mutants not killed below each):\n")
	for _, k := range ruleOrder {
		fmt.Fprintf(&b, "  %-58s %s\n", k, pct(*ruleScore[k]))
		if len(perRule[k]) > 0 {
			fmt.Fprintf(&b, "%s\n", strings.Join(perRule[k], "\n"))
		}
	}
	return b.String()
}
