package inventory

import (
	"errors"
	"fmt"
	"sort"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// counterFunctions only make sense on counters: applied to a gauge they
// report nonsense (a falling gauge reads as a counter reset).
var counterFunctions = map[string]bool{
	"rate":     true,
	"irate":    true,
	"increase": true,
	"resets":   true,
}

// MetricNames parses a PromQL expression and returns the metric names its
// selectors name, sorted and without duplicates.
func MetricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var (
		names = map[string]bool{}
		errs  []error
	)
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name, err := selectorName(vs)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		names[name] = true
		return nil
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// selectorName returns the metric name a selector selects. A selector
// without an exact name (only label matchers, or a regular expression on
// __name__) cannot be checked against the inventory and is an error.
func selectorName(vs *parser.VectorSelector) (string, error) {
	if vs.Name != "" {
		return vs.Name, nil
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel {
			if m.Type == labels.MatchEqual {
				return m.Value, nil
			}
			return "", fmt.Errorf("selector %s matches metric names by %s; name each metric exactly", vs, m.Type)
		}
	}
	return "", fmt.Errorf("selector %s names no metric", vs)
}

// Check parses a PromQL expression and reports every metric name it uses
// that no producer in the inventory exposes, and every counter-only
// function (rate, irate, increase, resets) applied to something that is
// not a counter. It returns the metric names used.
func Check(expr string) ([]string, error) {
	names, err := MetricNames(expr)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range names {
		if _, ok := Lookup(n); !ok {
			errs = append(errs, fmt.Errorf("metric %q is not produced by the exporter, the remediator, the auth-service contract, Prometheus, a recording rule or a listed external exporter (internal/inventory)", n))
		}
	}
	e, _ := parser.NewParser(parser.Options{}).ParseExpr(expr) // parsed above
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		call, ok := node.(*parser.Call)
		if !ok || !counterFunctions[call.Func.Name] {
			return nil
		}
		for _, arg := range call.Args {
			ms, ok := arg.(*parser.MatrixSelector)
			if !ok {
				continue
			}
			vs, ok := ms.VectorSelector.(*parser.VectorSelector)
			if !ok {
				continue
			}
			name, err := selectorName(vs)
			if err != nil {
				continue // reported by MetricNames
			}
			if m, ok := Lookup(name); ok && m.Type != Counter {
				errs = append(errs, fmt.Errorf("%s() applied to %s %q; it is only meaningful on counters", call.Func.Name, m.Type, name))
			}
		}
		return nil
	})
	if len(errs) > 0 {
		return names, fmt.Errorf("expression %q: %w", expr, errors.Join(errs...))
	}
	return names, nil
}
