package remediator

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Output formats of a simulation report.
const (
	SimOutputText     = "text"
	SimOutputMarkdown = "markdown"
	SimOutputJSON     = "json"
)

// Write renders the report as text, markdown or json.
func (r *SimReport) Write(w io.Writer, format string) error {
	switch format {
	case SimOutputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case SimOutputText:
		return r.writeText(w)
	case SimOutputMarkdown:
		return r.writeMarkdown(w)
	}
	return fmt.Errorf("output format %q: want text, markdown or json", format)
}

func simTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// actionText names the action, and that it waits for a person's approval.
func (a SimAction) actionText() string {
	if a.ApprovalRequired {
		return a.Action + " (after approval)"
	}
	return a.Action
}

// verificationText says how an action's verification ended.
func (a SimAction) verificationText() string {
	if a.Verification == OutcomeEffective {
		return fmt.Sprintf("effective after %s", (time.Duration(a.TimeToRecoverySeconds * float64(time.Second))).Round(time.Second))
	}
	return a.Verification
}

// refusedTarget names the target, or the rule when no target could be
// rendered.
func (x SimRefusal) refusedTarget() string {
	if x.Target != "" {
		return targetLabel(x.Namespace, x.Target)
	}
	return "rule " + x.Rule
}

func countsText(cs []SimCount) string {
	if len(cs) == 0 {
		return "none"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s %d", c.Reason, c.Count)
	}
	return strings.Join(parts, ", ")
}

func (r *SimReport) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Simulation %s to %s\n", simTime(r.From), simTime(r.To))
	fmt.Fprintf(&b, "Source: %s (%d deliveries replayed)\n\n", r.Source, r.Deliveries)
	fmt.Fprintf(&b, "Actions: %d on %d targets; peak %d per hour", len(r.Actions), len(r.Targets), r.PeakActionsPerHour)
	if !r.PeakHourStart.IsZero() {
		fmt.Fprintf(&b, " (hour from %s)", simTime(r.PeakHourStart))
	}
	fmt.Fprintf(&b, "; %d breaker openings\n", len(r.BreakerOpenings))
	fmt.Fprintf(&b, "Refusals: %s\n", countsText(r.Refusals))

	b.WriteString("\nPer rule and target:\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  RULE\tACTION\tTARGET\tACTIONS\tREFUSALS")
	for _, t := range r.ByTarget {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", t.Rule, t.Action, targetLabel(t.Namespace, t.Target), t.Actions, countsText(t.Refusals))
	}
	_ = tw.Flush()

	b.WriteString("\nActions:\n")
	if len(r.Actions) == 0 {
		b.WriteString("  none\n")
	} else {
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tRULE\tACTION\tTARGET\tALERT\tVERIFICATION")
		for _, a := range r.Actions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", simTime(a.Time), a.Rule, a.actionText(), targetLabel(a.Namespace, a.Target), a.Alertname, a.verificationText())
		}
		_ = tw.Flush()
	}

	b.WriteString("\nRefused (except duplicate and no_matching_rule):\n")
	if len(r.Refused) == 0 {
		b.WriteString("  none\n")
	}
	for _, x := range r.Refused {
		fmt.Fprintf(&b, "  %s %s %s (alert %s): %s\n", simTime(x.Time), x.refusedTarget(), x.Reason, x.Alertname, x.Detail)
	}

	b.WriteString("\nBreaker openings:\n")
	if len(r.BreakerOpenings) == 0 {
		b.WriteString("  none\n")
	}
	for _, o := range r.BreakerOpenings {
		fmt.Fprintf(&b, "  %s %s (rule %s, alert %s) open until %s: %s\n", simTime(o.Time), targetLabel(o.Namespace, o.Target), o.Rule, o.Alertname, simTime(o.Until), o.Detail)
	}

	b.WriteString("\nTargets touched:\n")
	if len(r.Targets) == 0 {
		b.WriteString("  none\n")
	}
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "  %s\n", t)
	}
	b.WriteString("\nNot evaluated:\n")
	for _, s := range r.NotEvaluated {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	b.WriteString("\nAssumptions:\n")
	for _, s := range r.Assumptions {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdCell escapes a table cell.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func (r *SimReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Simulation %s to %s\n\n", simTime(r.From), simTime(r.To))
	fmt.Fprintf(&b, "Source: %s (%d deliveries replayed).\n\n", mdCell(r.Source), r.Deliveries)
	b.WriteString("## Summary\n\n| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Actions | %d |\n| Targets touched | %d |\n| Peak actions per hour | %d |\n", len(r.Actions), len(r.Targets), r.PeakActionsPerHour)
	fmt.Fprintf(&b, "| Peak hour from | %s |\n| Breaker openings | %d |\n", simTime(r.PeakHourStart), len(r.BreakerOpenings))

	b.WriteString("\n## Refusals by reason\n\n| Reason | Count |\n|---|---:|\n")
	for _, c := range r.Refusals {
		fmt.Fprintf(&b, "| %s | %d |\n", c.Reason, c.Count)
	}

	b.WriteString("\n## Per rule and target\n\n| Rule | Action | Target | Actions | Refusals |\n|---|---|---|---:|---|\n")
	for _, t := range r.ByTarget {
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s |\n", mdCell(t.Rule), t.Action, mdCell(targetLabel(t.Namespace, t.Target)), t.Actions, countsText(t.Refusals))
	}

	b.WriteString("\n## Actions\n\n| Time | Rule | Action | Target | Alert | Verification |\n|---|---|---|---|---|---|\n")
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", simTime(a.Time), mdCell(a.Rule), a.actionText(), mdCell(targetLabel(a.Namespace, a.Target)), mdCell(a.Alertname), a.verificationText())
	}

	b.WriteString("\n## Refused\n\nExcept duplicate and no_matching_rule, which are only counted.\n\n| Time | Target | Reason | Alert | Detail |\n|---|---|---|---|---|\n")
	for _, x := range r.Refused {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", simTime(x.Time), mdCell(x.refusedTarget()), x.Reason, mdCell(x.Alertname), mdCell(x.Detail))
	}

	b.WriteString("\n## Breaker openings\n\n| Time | Target | Rule | Alert | Open until | Detail |\n|---|---|---|---|---|---|\n")
	for _, o := range r.BreakerOpenings {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", simTime(o.Time), mdCell(targetLabel(o.Namespace, o.Target)), mdCell(o.Rule), mdCell(o.Alertname), simTime(o.Until), mdCell(o.Detail))
	}

	b.WriteString("\n## Targets touched\n\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "- %s\n", t)
	}
	b.WriteString("\n## Not evaluated\n\n")
	for _, s := range r.NotEvaluated {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	b.WriteString("\n## Assumptions\n\n")
	for _, s := range r.Assumptions {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
