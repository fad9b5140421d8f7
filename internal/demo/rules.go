package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/warden-sre/warden/internal/yamlnode"
)

// compressRules writes copies of the rule files into dstDir with time
// compressed by factor: every range selector, subquery, offset, `for` and
// `keep_firing_for` is divided by it (ranges never below minRange, so that
// rate() still sees several samples). With 1 s scrapes and factor 30, a
// rule that means "5xx above 5% over 5 minutes, for 2 minutes" becomes "over
// 10 seconds, for 4 seconds": the same logic, at the demo's pace. It returns
// the paths written.
func compressRules(srcFiles []string, dstDir string, factor int, minRange time.Duration) ([]string, error) {
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
