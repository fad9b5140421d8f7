package remediator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	corev1 "k8s.io/api/core/v1"

	"github.com/warden-sre/warden/remediator/actions"
)

// Audit outcomes, as written in the log line's outcome field.
const (
	outcomeActed    = "acted"
	outcomeDryRun   = "dry_run"
	outcomeSkipped  = "skipped"
	outcomeFailed   = "failed"
	outcomeResolved = "resolved"
)

// Skip reasons. The set is closed so warden_remediator_skipped_total stays
// bounded.
const (
	ReasonNoMatchingRule = "no_matching_rule"
	ReasonInvalidTarget  = "invalid_target"
	ReasonNotAllowed     = "not_allowed"
	ReasonDisabled       = "disabled"
	ReasonDuplicate      = "duplicate"
	ReasonCooldown       = "cooldown"
	ReasonRateLimited    = "rate_limited"
	ReasonBreakerOpen    = "breaker_open"
	ReasonOptedOut       = "opted_out"
	ReasonUnavailable    = "unavailable"
	ReasonShutdown       = "shutdown"
)

var skipReasons = []string{
	ReasonNoMatchingRule, ReasonInvalidTarget, ReasonNotAllowed, ReasonDisabled,
	ReasonDuplicate, ReasonCooldown, ReasonRateLimited, ReasonBreakerOpen,
	ReasonOptedOut, ReasonUnavailable, ReasonShutdown, ReasonResolvedBeforeAction, ReasonBlastRadius,
}

// record is one decision, as audited.
type record struct {
	Alertname   string
	Fingerprint string
	StartsAt    time.Time
	Rule        string
	Action      actions.Kind
	Target      target
	Outcome     string
	Reason      string
	Detail      string
	DryRun      bool
	Duration    time.Duration
	// Executed: the executor ran (its duration goes into the histogram).
	Executed bool
	Object   string // from actions.Result, e.g. "Deployment/auth-service"
}

// newRecord starts the record of one decision on one alert.
func newRecord(a *amtemplate.Alert, d decision) record {
	rec := record{
		Alertname:   a.Labels["alertname"],
		Fingerprint: a.Fingerprint,
		StartsAt:    a.StartsAt,
		Target:      d.Target,
		DryRun:      d.DryRun,
	}
	if d.Rule != nil {
		rec.Rule = d.Rule.Name
		rec.Action = d.Rule.Action
	}
	return rec
}

// skipped records a decision not to act.
func (rec record) skipped(reason, detail string) record {
	rec.Outcome, rec.Reason, rec.Detail = outcomeSkipped, reason, detail
	return rec
}

// audit writes the decision as one log line, counts it and, when the target
// is a Kubernetes object inside the allowlist, records an Event on it.
func (r *Remediator) audit(ctx context.Context, rec record) {
	level := slog.LevelInfo
	if rec.Outcome == outcomeFailed || rec.Outcome == outcomeInterrupted {
		level = slog.LevelWarn
	}
	targetName := ""
	if rec.Target.Name != "" {
		targetName = rec.Target.String()
	}
	r.logger.LogAttrs(ctx, level, "remediation decision",
		slog.String("alertname", rec.Alertname),
		slog.String("fingerprint", rec.Fingerprint),
		slog.Time("starts_at", rec.StartsAt),
		slog.String("rule", rec.Rule),
		slog.String("action", string(rec.Action)),
		slog.String("namespace", rec.Target.Namespace),
		slog.String("target", targetName),
		slog.String("outcome", rec.Outcome),
		slog.String("reason", rec.Reason),
		slog.String("detail", rec.Detail),
		slog.Bool("dry_run", rec.DryRun),
		slog.Float64("duration_seconds", rec.Duration.Seconds()),
	)
	switch rec.Outcome {
	case outcomeActed:
		r.metrics.actions.WithLabelValues(string(rec.Action), "success").Inc()
	case outcomeFailed:
		r.metrics.actions.WithLabelValues(string(rec.Action), "failed").Inc()
	case outcomeDryRun:
		r.metrics.actions.WithLabelValues(string(rec.Action), "dry_run").Inc()
	case outcomeInterrupted:
		r.metrics.actions.WithLabelValues(string(rec.Action), outcomeInterrupted).Inc()
	case outcomeSkipped:
		r.metrics.skipped.WithLabelValues(rec.Reason).Inc()
	}
	if rec.Executed {
		r.metrics.actionDuration.WithLabelValues(string(rec.Action)).Observe(rec.Duration.Seconds())
	}
	// Events only on allowed Kubernetes targets: refused targets are
	// outside what the remediator may touch, and duplicate deliveries would
	// flood the target's event list.
	if rec.Target.Kind != "deployment" || r.kube == nil {
		return
	}
	switch rec.Reason {
	case ReasonDuplicate, ReasonInvalidTarget, ReasonNotAllowed, ReasonNoMatchingRule:
		return
	}
	if rec.Outcome == outcomeSkipped {
		window := skipEventWindow
		if p := r.Policy(); p != nil && p.Gates.EventInterval > 0 {
			window = p.Gates.EventInterval
		}
		ok, held := r.skipEvents.allow(rec.Target, rec.Reason, r.now(), window)
		if !ok {
			return
		}
		if held > 0 {
			rec.Detail += fmt.Sprintf(" (%d more %s skips since the last such Event)", held, rec.Reason)
		}
	}
	r.event(ctx, rec)
}

func (r *Remediator) event(ctx context.Context, rec record) {
	reason, eventType := "RemediationSkipped", corev1.EventTypeNormal
	switch rec.Outcome {
	case outcomeActed:
		reason = "Remediated"
	case outcomeDryRun:
		reason = "RemediationDryRun"
	case outcomeFailed:
		reason, eventType = "RemediationFailed", corev1.EventTypeWarning
	case outcomeResolved:
		reason = "AlertResolved"
	case outcomePending:
		reason = "ApprovalRequested"
	case outcomeInterrupted:
		reason, eventType = "RemediationInterrupted", corev1.EventTypeWarning
	}
	msg := fmt.Sprintf("%s %s for alert %s (fingerprint %s, rule %s)", rec.Outcome, rec.Action, rec.Alertname, rec.Fingerprint, rec.Rule)
	if rec.Reason != "" {
		msg += ": " + rec.Reason
	}
	if rec.Detail != "" {
		msg += ": " + rec.Detail
	}
	r.createEvent(ctx, rec.Target, reason, eventType, msg)
}

func (r *Remediator) createEvent(_ context.Context, t target, reason, eventType, msg string) {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	r.recorder.Event(deploymentRef(t), eventType, reason, msg)
}

// escalate reports that a target's breaker opened: metric, counter, an
// ERROR log line and a Warning event.
func (r *Remediator) escalate(ctx context.Context, t target, alertname, why string) {
	r.metrics.escalations.WithLabelValues(t.Namespace, t.String()).Inc()
	r.logger.Error("escalating to Level 2: circuit breaker opened, no more automatic actions on this target",
		"namespace", t.Namespace, "target", t.String(), "alertname", alertname, "reason", why)
	if t.Kind == "deployment" && r.kube != nil {
		r.createEvent(ctx, t, "RemediationEscalated", corev1.EventTypeWarning,
			"circuit breaker opened, escalating to Level 2: "+why)
	}
}
