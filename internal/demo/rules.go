package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/internal/yamlnode"
)

// compressedDurationMetrics are the metrics whose value is the length of a
// setting the demo compresses like the rules' time: the exporter's auth
// sliding window (deploy/demo/warden-exporter.yml: 10 s for the 5 minutes
// of production).
var compressedDurationMetrics = []string{"warden_auth_failed_logins_window_seconds"}

// compressRules writes copies of the rule files into dstDir with time
// compressed by factor: every range selector, subquery, offset, `for` and
// `keep_firing_for` is divided by it (ranges never below minRange, so that
// rate() still sees several samples). With 1 s scrapes and factor 30, a
// rule that means "5xx above 5% over 5 minutes, for 2 minutes" becomes "over
// 10 seconds, for 4 seconds": the same logic, at the demo's pace.
//
// durationMetrics report the length of a setting compressed the same way
// (a sliding window of 10 s that stands for 5 minutes): what such a window
// holds is what 5 minutes hold in the scenario, so a rule that divides by
// the length must divide by the scenario's. Every selector of such a
// metric, m, becomes (m * factor): BruteForceSource's "failures in the
// window / window length * 60 > 10" then still means 10 per minute of the
// scenario, not 10 per demo minute (2 failures in a 10 s window, which the
// exporter's own per-window thresholds, such as 20 distinct usernames for
// password spraying, could never stay under). A range selector of such a
// metric is an error: its samples cannot be rewritten. It returns the paths
// written.
func compressRules(srcFiles []string, dstDir string, factor int, minRange time.Duration, durationMetrics []string) ([]string, error) {
	if factor < 1 {
		return nil, fmt.Errorf("time compression factor %d: must be at least 1", factor)
	}
	scale := func(d time.Duration, floor time.Duration) time.Duration {
		if d == 0 {
			return 0
		}
		s := (d / time.Duration(factor)).Round(time.Second)
		if s < floor {
			s = floor
		}
		return s
	}
	p := parser.NewParser(parser.Options{})
	var out []string
	for _, src := range srcFiles {
		raw, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		groups := yamlnode.MapValue(doc.Content[0], "groups")
		if groups == nil {
			return nil, fmt.Errorf("%s: no groups", src)
		}
		for _, g := range groups.Content {
			rules := yamlnode.MapValue(g, "rules")
			if rules == nil {
				continue
			}
			for _, r := range rules.Content {
				exprNode := yamlnode.MapValue(r, "expr")
				if exprNode == nil {
					return nil, fmt.Errorf("%s: rule without expr", src)
				}
				expr, err := p.ParseExpr(exprNode.Value)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", src, err)
				}
				if expr, err = scaleDurationSelectors(expr, durationMetrics, factor); err != nil {
					return nil, fmt.Errorf("%s: %w", src, err)
				}
				parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
					switch n := n.(type) {
					case *parser.MatrixSelector:
						n.Range = scale(n.Range, minRange)
					case *parser.SubqueryExpr:
						n.Range = scale(n.Range, minRange)
						n.Step = scale(n.Step, time.Second)
						n.OriginalOffset = scale(n.OriginalOffset, time.Second)
					case *parser.VectorSelector:
						n.OriginalOffset = scale(n.OriginalOffset, time.Second)
					}
					return nil
				})
				exprNode.Value = expr.String()
				exprNode.Style = 0
				for _, key := range []string{"for", "keep_firing_for"} {
					if n := yamlnode.MapValue(r, key); n != nil {
						d, err := model.ParseDuration(n.Value)
						if err != nil {
							return nil, fmt.Errorf("%s: %s %q: %w", src, key, n.Value, err)
						}
						n.Value = model.Duration(scale(time.Duration(d), time.Second)).String()
					}
				}
			}
		}
		b, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(dstDir, filepath.Base(src))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return nil, err
		}
		out = append(out, dst)
	}
	return out, nil
}

// scaleDurationSelectors returns e with every selector of the metrics
// names, m, replaced by (m * factor).
func scaleDurationSelectors(e parser.Expr, names []string, factor int) (parser.Expr, error) {
	if len(names) == 0 {
		return e, nil
	}
	var walk func(e parser.Expr) (parser.Expr, error)
	walkAll := func(es ...*parser.Expr) error {
		for _, p := range es {
			if *p == nil {
				continue
			}
			n, err := walk(*p)
			if err != nil {
				return err
			}
			*p = n
		}
		return nil
	}
	walk = func(e parser.Expr) (parser.Expr, error) {
		switch n := e.(type) {
		case *parser.VectorSelector:
			name, err := selectedName(n, names)
			if err != nil || name == "" {
				return n, err
			}
			return &parser.ParenExpr{Expr: &parser.BinaryExpr{
				Op: parser.MUL, LHS: n, RHS: &parser.NumberLiteral{Val: float64(factor)},
			}}, nil
		case *parser.MatrixSelector:
			vs, ok := n.VectorSelector.(*parser.VectorSelector)
			if !ok {
				return n, nil
			}
			name, err := selectedName(vs, names)
			if err != nil {
				return n, err
			}
			if name != "" {
				return n, fmt.Errorf("range selector %s: the samples of the compressed duration %s cannot be scaled", n, name)
			}
			return n, nil
		case *parser.ParenExpr:
			return n, walkAll(&n.Expr)
		case *parser.UnaryExpr:
			return n, walkAll(&n.Expr)
		case *parser.BinaryExpr:
			return n, walkAll(&n.LHS, &n.RHS)
		case *parser.AggregateExpr:
			return n, walkAll(&n.Expr, &n.Param)
		case *parser.Call:
			for i := range n.Args {
				if err := walkAll(&n.Args[i]); err != nil {
					return n, err
				}
			}
			return n, nil
		case *parser.SubqueryExpr:
			return n, walkAll(&n.Expr)
		case *parser.StepInvariantExpr:
			return n, walkAll(&n.Expr)
		case *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
			return n, nil
		}
		return e, fmt.Errorf("unexpected PromQL node %T in %s", e, e)
	}
	return walk(e)
}

// selectedName returns which of names the selector selects, "" if none;
// an error when a __name__ matcher other than equality could select one.
func selectedName(vs *parser.VectorSelector, names []string) (string, error) {
	if slices.Contains(names, vs.Name) {
		return vs.Name, nil
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel {
			continue
		}
		for _, name := range names {
			if !m.Matches(name) {
				continue
			}
			if m.Type != labels.MatchEqual {
				return name, fmt.Errorf("selector %s may select the compressed duration %s: name it exactly", vs, name)
			}
			return name, nil
		}
	}
	return "", nil
}
