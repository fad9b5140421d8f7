package remediator

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/remediator/actions"
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
	breakerOpen     *breakerStates
	escalations     *prometheus.CounterVec
}

var webhookCodes = []int{202, 400, 401, 405, 413, 415, 503}

func newMetrics(reg prometheus.Registerer, queueDepth func() float64, now func() time.Time) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_actions_total",
			Help: "Actions carried out, by action and outcome (success, failed, dry_run; interrupted: claimed, but no outcome was ever recorded).",
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
		breakerOpen: newBreakerStates(now),
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
	for _, k := range []actions.Kind{actions.Restart, actions.Scale, actions.Recycle, actions.FlushCache, actions.Reload, actions.BlockSource} {
		for _, o := range []string{"success", "failed", "dry_run", outcomeInterrupted} {
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
