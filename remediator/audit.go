package remediator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

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

// metrics are the remediator's own metrics; the names are a contract with
// the rules and dashboards.
type metrics struct {
	actions         *prometheus.CounterVec
	skipped         *prometheus.CounterVec
	webhookRequests *prometheus.CounterVec
	webhookDuration prometheus.Histogram
	queueDepth      prometheus.GaugeFunc
	actionDuration  *prometheus.HistogramVec
	breakerOpen     *prometheus.GaugeVec
	escalations     *prometheus.CounterVec
}

var webhookCodes = []int{202, 400, 401, 405, 413, 415, 503}

func newMetrics(reg prometheus.Registerer, queueDepth func() float64) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_actions_total",
			Help: "Actions carried out, by action and outcome (success, failed, dry_run).",
		}, []string{"action", "outcome"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_skipped_total",
			Help: "Decisions not to act, by reason.",
		}, []string{"reason"}),
		webhookRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_webhook_requests_total",
			Help: "Webhook requests, by HTTP status code of the reply.",
		}, []string{"code"}),
		webhookDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "warden_remediator_webhook_duration_seconds",
			Help:    "Time to answer a webhook request (decode, authenticate, queue).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		queueDepth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "warden_remediator_queue_depth",
			Help: "Alerts accepted and waiting for a worker.",
		}, queueDepth),
		actionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warden_remediator_action_duration_seconds",
			Help:    "Time an action took, retries and verification included.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"action"}),
		breakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warden_remediator_breaker_open",
			Help: "1 while the circuit breaker of a target is open (no more actions; escalated to Level 2), 0 when closed.",
		}, []string{"namespace", "target"}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_escalations_total",
			Help: "Times a target's circuit breaker opened and the problem was escalated to Level 2.",
		}, []string{"namespace", "target"}),
	}
	for _, c := range []prometheus.Collector{m.actions, m.skipped, m.webhookRequests, m.webhookDuration, m.queueDepth, m.actionDuration, m.breakerOpen, m.escalations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	for _, k := range []actions.Kind{actions.Restart, actions.Scale, actions.Recycle, actions.FlushCache, actions.Reload} {
		for _, o := range []string{"success", "failed", "dry_run"} {
			m.actions.WithLabelValues(string(k), o)
		}
		m.actionDuration.WithLabelValues(string(k))
	}
	for _, r := range skipReasons {
		m.skipped.WithLabelValues(r)
	}
	for _, c := range webhookCodes {
		m.webhookRequests.WithLabelValues(strconv.Itoa(c))
	}
	return m, nil
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

// audit writes the decision as one log line, counts it and, when the target
// is a Kubernetes object inside the allowlist, records an Event on it.
func (r *Remediator) audit(ctx context.Context, rec record) {
	level := slog.LevelInfo
	if rec.Outcome == outcomeFailed {
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
	case outcomeSkipped:
		r.metrics.skipped.WithLabelValues(rec.Reason).Inc()
	}
	if rec.Executed {
		r.metrics.actionDuration.WithLabelValues(string(rec.Action)).Observe(rec.Duration.Seconds())
	}
	// Events only on allowed Kubernetes targets: refused targets are
	// outside what the remediator may touch, and duplicate deliveries would
	// flood the target's event list.
	if rec.Target.Kind != "deployment" || rec.Reason == ReasonDuplicate || r.kube == nil {
		return
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

func (r *Remediator) createEvent(ctx context.Context, t target, reason, eventType, msg string) {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      t.Name + "." + strconv.FormatInt(now.UnixNano(), 16) + rand.String(4),
			Namespace: t.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "apps/v1",
			Kind:       "Deployment",
			Namespace:  t.Namespace,
			Name:       t.Name,
		},
		Reason:              reason,
		Message:             msg,
		Type:                eventType,
		Source:              corev1.EventSource{Component: "warden-remediator"},
		ReportingController: "warden.io/remediator",
		ReportingInstance:   r.identity,
		Action:              "Remediate",
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := r.kube.CoreV1().Events(t.Namespace).Create(ectx, ev, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
		r.logger.Warn("cannot record event", "namespace", t.Namespace, "target", t.String(), "reason", reason, "err", err)
	}
}

// escalate reports that a target's breaker opened: metric, counter, an
// ERROR log line and a Warning event.
func (r *Remediator) escalate(ctx context.Context, t target, alertname, why string) {
	r.metrics.breakerOpen.WithLabelValues(t.Namespace, t.String()).Set(1)
	r.metrics.escalations.WithLabelValues(t.Namespace, t.String()).Inc()
	r.logger.Error("escalating to Level 2: circuit breaker opened, no more automatic actions on this target",
		"namespace", t.Namespace, "target", t.String(), "alertname", alertname, "reason", why)
	if t.Kind == "deployment" && r.kube != nil {
		r.createEvent(ctx, t, "RemediationEscalated", corev1.EventTypeWarning,
			"circuit breaker opened, escalating to Level 2: "+why)
	}
}
