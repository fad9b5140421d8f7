// Package mutate is a mutation tester for Prometheus rule files: it changes
// one number, matcher, window, aggregation, guard, duration or label of one
// rule at a time, on the parsed PromQL expression, and runs promtool's
// checks and unit tests against each mutant. A mutant the tests still pass
// with (a survivor) is a number or a branch no test pins.
package mutate

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Mutant is one change to one rule.
type Mutant struct {
	// Desc says what changed, e.g. "threshold 0.05 -> 0.1"; together with
	// the rule's name it identifies the mutant in the list of equivalent
	// mutants.
	Desc string

	// Exactly one of these is set: a new expression, or a change to the
	// rule's fields.
	Expr  string
	Field *FieldChange
}

// FieldChange sets (or, with Delete, removes) one field of a rule:
// "for", "keep_firing_for" or "labels.<name>".
type FieldChange struct {
	Key    string
	Value  string
	Delete bool
}

// Rule is the part of a rule the generator needs.
type Rule struct {
	Name          string
	Alert         bool
	Expr          string
	For           string
	KeepFiringFor string
	Labels        map[string]string
}

var parse = parser.NewParser(parser.Options{}).ParseExpr

// Generate returns every mutant of r, in a stable order, without
// duplicates and without mutants whose expression prints like the
// original.
func Generate(r Rule) ([]Mutant, error) {
	orig, err := parse(r.Expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	origText := orig.String()

	var out []Mutant
	seenExpr := map[string]bool{origText: true}
	descs := map[string]int{}
	add := func(m Mutant) {
		if m.Expr != "" {
			if seenExpr[m.Expr] {
				return
			}
			seenExpr[m.Expr] = true
		}
		m.Desc = oneLine(m.Desc)
		descs[m.Desc]++
		if n := descs[m.Desc]; n > 1 {
			m.Desc = fmt.Sprintf("%s (#%d)", m.Desc, n)
		}
		out = append(out, m)
	}

	// Count the nodes once; each mutation re-parses the expression, walks
	// to node i and changes it, so that mutants never share state.
	var nodes int
	parser.Inspect(orig, func(parser.Node, []parser.Node) error { nodes++; return nil })
	for i := range nodes {
		for j := 0; ; j++ {
			e, err := parse(r.Expr)
			if err != nil {
				return nil, err
			}
			desc, ok, more := applyAt(&e, i, j)
			if ok {
				add(Mutant{Desc: desc, Expr: e.String()})
			}
			if !more {
				break
			}
		}
	}

	if r.Alert {
		for _, f := range []struct{ key, val string }{{"for", r.For}, {"keep_firing_for", r.KeepFiringFor}} {
			if f.val == "" {
				continue
			}
			d, err := model.ParseDuration(f.val)
			if err != nil {
				return nil, fmt.Errorf("%s: %s %q: %w", r.Name, f.key, f.val, err)
			}
			add(Mutant{Desc: fmt.Sprintf("%s %s dropped", f.key, f.val), Field: &FieldChange{Key: f.key, Delete: true}})
			for _, nd := range []model.Duration{d / 2, d * 2} {
				if nd <= 0 {
					continue
				}
				add(Mutant{Desc: fmt.Sprintf("%s %s -> %s", f.key, f.val, nd), Field: &FieldChange{Key: f.key, Value: nd.String()}})
			}
		}
	}
	names := make([]string, 0, len(r.Labels))
	for k := range r.Labels {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := r.Labels[k]
		nv := "mutated"
		if k == "severity" {
			nv = map[string]string{"critical": "warning", "warning": "critical", "info": "warning"}[v]
			if nv == "" {
				nv = "critical"
			}
		}
		add(Mutant{Desc: fmt.Sprintf("label %s=%q -> %q", k, v, nv), Field: &FieldChange{Key: "labels." + k, Value: nv}})
	}
	return out, nil
}

var spaces = regexp.MustCompile(`\s+`)

func oneLine(s string) string { return strings.TrimSpace(spaces.ReplaceAllString(s, " ")) }

// applyAt walks to the i-th node of *root (in parser.Inspect order) and
// applies that node's j-th mutation. ok reports whether there was a j-th
// mutation; more whether there may be a (j+1)-th.
func applyAt(root *parser.Expr, i, j int) (desc string, ok, more bool) {
	n := 0
	var target parser.Node
	var path []parser.Node
	parser.Inspect(*root, func(node parser.Node, p []parser.Node) error {
		if n == i {
			target = node
			path = append([]parser.Node(nil), p...)
		}
		n++
		return nil
	})
	if target == nil {
		return "", false, false
	}
	muts := mutationsOf(target)
	if j >= len(muts) {
		return "", false, false
	}
	m := muts[j]
	before := target.String()
	replacement := m.apply()
	if replacement != nil {
		replace(root, path, target.(parser.Expr), replacement)
	}
	return m.desc(before), true, j+1 < len(muts)
}

type mutation struct {
	// apply changes the node in place and returns nil, or returns the
	// expression that replaces it in its parent.
	apply func() parser.Expr
	desc  func(before string) string
}

func inPlace(desc string, f func()) mutation {
	return mutation{apply: func() parser.Expr { f(); return nil }, desc: func(string) string { return desc }}
}

var comparisonFlip = map[parser.ItemType]parser.ItemType{
	parser.GTR: parser.LSS, parser.LSS: parser.GTR,
	parser.GTE: parser.LTE, parser.LTE: parser.GTE,
	parser.EQLC: parser.NEQ, parser.NEQ: parser.EQLC,
}

var aggregations = []parser.ItemType{parser.SUM, parser.MAX, parser.MIN, parser.AVG}

var overTime = []string{"min_over_time", "max_over_time", "avg_over_time"}

// mutationsOf lists the mutations of one node.
func mutationsOf(node parser.Node) []mutation {
	var out []mutation
	switch n := node.(type) {
	case *parser.NumberLiteral:
		if n.Val == 0 || n.Duration {
			break
		}
		v := n.Val
		for _, f := range []float64{0.5, 2} {
			nv := v * f
			out = append(out, inPlace(fmt.Sprintf("number %s -> %s", fmtNum(v), fmtNum(nv)), func() { n.Val = nv }))
		}

	case *parser.BinaryExpr:
		op := n.Op
		if flip, ok := comparisonFlip[op]; ok {
			out = append(out, inPlace(fmt.Sprintf("comparison %s -> %s", op, flip), func() { n.Op = flip }))
			// A comparison without bool is a filter: dropping it removes a
			// threshold or a guard such as (x > 0).
			if !n.ReturnBool {
				lhs, rhs := n.LHS, n.RHS
				if isScalar(rhs) {
					out = append(out, mutation{
						apply: func() parser.Expr { return lhs },
						desc:  func(b string) string { return "filter dropped: " + b },
					})
				} else if isScalar(lhs) {
					out = append(out, mutation{
						apply: func() parser.Expr { return rhs },
						desc:  func(b string) string { return "filter dropped: " + b },
					})
				}
			}
		}
		if op == parser.LAND || op == parser.LOR || op == parser.LUNLESS {
			lhs, rhs := n.LHS, n.RHS
			out = append(out,
				mutation{apply: func() parser.Expr { return lhs }, desc: func(string) string { return fmt.Sprintf("%s arm dropped: %s", op, rhs) }},
				mutation{apply: func() parser.Expr { return rhs }, desc: func(string) string { return fmt.Sprintf("%s arm dropped: %s", op, lhs) }},
			)
		}
		if vm := n.VectorMatching; vm != nil {
			kw := "ignoring"
			if vm.On {
				kw = "on"
			}
			for k, l := range vm.MatchingLabels {
				out = append(out, inPlace(fmt.Sprintf("%s(%s): %s dropped", kw, strings.Join(vm.MatchingLabels, ", "), l), func() {
					vm.MatchingLabels = slices.Delete(slices.Clone(vm.MatchingLabels), k, k+1)
				}))
			}
		}

	case *parser.VectorSelector:
		for k, m := range n.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				continue
			}
			out = append(out, inPlace(fmt.Sprintf("matcher %s dropped from %s", m, n.Name), func() {
				n.LabelMatchers = slices.Delete(slices.Clone(n.LabelMatchers), k, k+1)
			}))
			neg := map[labels.MatchType]labels.MatchType{
				labels.MatchEqual: labels.MatchNotEqual, labels.MatchNotEqual: labels.MatchEqual,
				labels.MatchRegexp: labels.MatchNotRegexp, labels.MatchNotRegexp: labels.MatchRegexp,
			}[m.Type]
			nm := labels.MustNewMatcher(neg, m.Name, m.Value)
			out = append(out, inPlace(fmt.Sprintf("matcher %s -> %s in %s", m, nm, n.Name), func() {
				n.LabelMatchers = slices.Clone(n.LabelMatchers)
				n.LabelMatchers[k] = nm
			}))
			if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
				alts := topLevelAlternatives(m.Value)
				if len(alts) > 1 {
					for a := range alts {
						rest := slices.Delete(slices.Clone(alts), a, a+1)
						nm := labels.MustNewMatcher(m.Type, m.Name, strings.Join(rest, "|"))
						out = append(out, inPlace(fmt.Sprintf("regex alternative %q dropped from %s in %s", alts[a], m, n.Name), func() {
							n.LabelMatchers = slices.Clone(n.LabelMatchers)
							n.LabelMatchers[k] = nm
						}))
					}
				}
			}
		}

	case *parser.MatrixSelector:
		if n.RangeExpr != nil {
			break
		}
		r := n.Range
		for _, nr := range []time.Duration{r / 2, r * 2} {
			out = append(out, inPlace(fmt.Sprintf("range [%s] -> [%s] on %s", model.Duration(r), model.Duration(nr), n.VectorSelector), func() { n.Range = nr }))
		}

	case *parser.SubqueryExpr:
		if n.RangeExpr != nil {
			break
		}
		r := n.Range
		for _, nr := range []time.Duration{r / 2, r * 2} {
			out = append(out, inPlace(fmt.Sprintf("subquery range [%s] -> [%s]", model.Duration(r), model.Duration(nr)), func() { n.Range = nr }))
		}

	case *parser.AggregateExpr:
		if slices.Contains(aggregations, n.Op) {
			for _, a := range aggregations {
				if a == n.Op {
					continue
				}
				out = append(out, inPlace(fmt.Sprintf("aggregation %s -> %s by (%s)", n.Op, a, strings.Join(n.Grouping, ", ")), func() { n.Op = a }))
			}
		}
		kw := "by"
		if n.Without {
			kw = "without"
		}
		for k, l := range n.Grouping {
			out = append(out, inPlace(fmt.Sprintf("%s %s(%s): %s dropped", n.Op, kw, strings.Join(n.Grouping, ", "), l), func() {
				n.Grouping = slices.Delete(slices.Clone(n.Grouping), k, k+1)
			}))
		}

	case *parser.Call:
		name := n.Func.Name
		swap := map[string]string{"rate": "irate", "irate": "rate"}[name]
		if swap != "" {
			out = append(out, inPlace(fmt.Sprintf("function %s -> %s", name, swap), func() { n.Func = parser.Functions[swap] }))
		}
		if slices.Contains(overTime, name) {
			for _, o := range overTime {
				if o == name {
					continue
				}
				out = append(out, inPlace(fmt.Sprintf("function %s -> %s", name, o), func() { n.Func = parser.Functions[o] }))
			}
		}
	}
	return out
}

func isScalar(e parser.Expr) bool {
	for {
		switch x := e.(type) {
		case *parser.ParenExpr:
			e = x.Expr
		default:
			return e.Type() == parser.ValueTypeScalar
		}
	}
}

// topLevelAlternatives splits a regular expression at the | that are not
// inside parentheses or brackets.
func topLevelAlternatives(re string) []string {
	var out []string
	depth, start := 0, 0
	inClass := false
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\':
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			out = append(out, re[start:i])
			start = i + 1
		}
	}
	return append(out, re[start:])
}

func fmtNum(v float64) string { return (&parser.NumberLiteral{Val: v}).String() }

// replace puts repl where old is: in old's parent (the last node of path),
// or at the root.
func replace(root *parser.Expr, path []parser.Node, old, repl parser.Expr) {
	if len(path) == 0 {
		*root = repl
		return
	}
	switch p := path[len(path)-1].(type) {
	case *parser.BinaryExpr:
		if p.LHS == old {
			p.LHS = repl
		} else {
			p.RHS = repl
		}
	case *parser.ParenExpr:
		p.Expr = repl
	case *parser.AggregateExpr:
		if p.Expr == old {
			p.Expr = repl
		} else {
			p.Param = repl
		}
	case *parser.Call:
		for k := range p.Args {
			if p.Args[k] == old {
				p.Args[k] = repl
			}
		}
	case *parser.SubqueryExpr:
		p.Expr = repl
	case *parser.UnaryExpr:
		p.Expr = repl
	case parser.Expressions:
		for k := range p {
			if p[k] == old {
				p[k] = repl
			}
		}
	default:
		panic(fmt.Sprintf("mutate: cannot replace a child of %T", p))
	}
}
