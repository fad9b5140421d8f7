package remediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/remediator/actions"
)

// Verification outcomes.
const (
	OutcomeEffective    = "effective"
	OutcomeIneffective  = "ineffective"
	OutcomeInconclusive = "inconclusive"
)

var verifyOutcomes = []string{OutcomeEffective, OutcomeIneffective, OutcomeInconclusive}

// VerifyConfig says how the outcome of an action is checked.
type VerifyConfig struct {
	// Window is how long after the action the alert may take to stop
	// firing. It must cover the rule's lookback (a rate over 5m keeps
	// firing for up to 5m after the cause is gone) plus its for:.
	Window time.Duration `yaml:"window"`
	// RolloutTimeout bounds the wait for the rollout the action started
	// (restart, scale, recycle).
	RolloutTimeout time.Duration `yaml:"rollout_timeout"`
	// PollInterval is the time between two checks.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// DefaultVerifyConfig holds verification's defaults.
var DefaultVerifyConfig = VerifyConfig{Window: 10 * time.Minute, RolloutTimeout: 10 * time.Minute, PollInterval: 15 * time.Second}

func (c *VerifyConfig) validate() error {
	if c.Window <= 0 {
		return errors.New("verify.window: must be positive")
	}
	if c.RolloutTimeout <= 0 {
		return errors.New("verify.rollout_timeout: must be positive")
	}
	if c.PollInterval <= 0 {
		return errors.New("verify.poll_interval: must be positive")
	}
	return nil
}

// verifyMetrics count verification outcomes.
type verifyMetrics struct {
	outcomes       *prometheus.CounterVec
	timeToRecovery *prometheus.HistogramVec
}

func newVerifyMetrics(reg prometheus.Registerer, m *metrics) (*verifyMetrics, error) {
	v := &verifyMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_outcomes_total",
			Help: "Verified outcomes of actions, by rule, action and outcome (effective, ineffective, inconclusive).",
		}, []string{"rule", "action", "outcome"}),
		timeToRecovery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warden_remediator_time_to_recovery_seconds",
			Help:    "Time from an effective action until its alert stopped firing.",
			Buckets: []float64{5, 15, 30, 60, 120, 180, 300, 450, 600, 900, 1800},
		}, []string{"rule", "action"}),
	}
	for _, c := range []prometheus.Collector{v.outcomes, v.timeToRecovery} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// The gates' skip reasons, beside the ones newMetrics creates.
	for _, reason := range gateReasons {
		m.skipped.WithLabelValues(reason)
	}
	return v, nil
}

// initRules creates the series of every rule so that rates start at zero.
func (v *verifyMetrics) initRules(p *Policy) {
	for _, r := range p.Rules {
		for _, o := range verifyOutcomes {
			v.outcomes.WithLabelValues(r.Name, string(r.Action), o)
		}
		v.timeToRecovery.WithLabelValues(r.Name, string(r.Action))
	}
}

// pendingVerifications lets a resolved notification from Alertmanager end
// the wait of a verification on the same alert.
type pendingVerifications struct {
	mu      sync.Mutex
	waiting map[string][]chan struct{}
}

func (p *pendingVerifications) add(fingerprint string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting == nil {
		p.waiting = map[string][]chan struct{}{}
	}
	p.waiting[fingerprint] = append(p.waiting[fingerprint], ch)
	return ch, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		chans := p.waiting[fingerprint]
		for i, c := range chans {
			if c == ch {
				chans = append(chans[:i], chans[i+1:]...)
				break
			}
		}
		if len(chans) == 0 {
			delete(p.waiting, fingerprint)
		} else {
			p.waiting[fingerprint] = chans
		}
	}
}

func (p *pendingVerifications) resolved(fingerprint string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ch := range p.waiting[fingerprint] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// verification is one action whose outcome is being checked.
type verification struct {
	snap   *snapshot
	store  stateStore
	alert  amtemplate.KV
	target target
	kind   actions.Kind
	key    string
	rec    record
	start  time.Time
	// resolved receives the alert's resolved notification.
	resolved <-chan struct{}
}

// verifyLater checks, without holding a worker, whether an action that
// was carried out worked, and records the outcome.
func (r *Remediator) verifyLater(ctx context.Context, snap *snapshot, store stateStore, a *amtemplate.Alert, d decision, key string, rec record) {
	if rec.Outcome != outcomeActed {
		return
	}
	v := verification{snap: snap, store: store, alert: a.Labels, target: d.Target, kind: d.Rule.Action, key: key, rec: rec, start: r.now()}
	// Registered before the worker moves on, so that a resolved
	// notification handled next is not missed.
	resolved, done := r.pending.add(rec.Fingerprint)
	v.resolved = resolved
	snap.users.Add(1) // keeps the snapshot's Redis clients open for store
	r.verifying.Add(1)
	go func() {
		defer r.verifying.Done()
		defer snap.users.Done()
		defer done()
		outcome, detail, recovery := r.verify(ctx, v)
		r.recordVerification(ctx, v, outcome, detail, recovery)
	}()
}

// verify waits for the rollout (Kubernetes actions) and for the alert to
// stop firing. effective: the rollout completed and the alert stopped
// firing (Prometheus, else Alertmanager, or a resolved notification);
// ineffective: the rollout failed or the alert still fires at the end of
// verify.window; inconclusive: the alert could not be read at the end.
func (r *Remediator) verify(ctx context.Context, v verification) (outcome, detail string, recovery time.Duration) {
	cfg := v.snap.policy.Verify
	rolloutDone := v.target.Kind != "deployment" || v.kind == actions.Reload
	rolloutDetail := ""
	var recoveredAt time.Time
	recovered, seenFiring := false, false
	var readErr error
	rd := r.verifyReader()
	var generation int64
	for {
		now := r.now()
		if !rolloutDone {
			st, err := r.readRollout(ctx, v.target, &generation)
			switch {
			case err != nil:
				rolloutDetail = err.Error()
			case st.failed:
				return OutcomeIneffective, st.detail, 0
			case st.complete:
				rolloutDone, rolloutDetail = true, st.detail
			default:
				rolloutDetail = st.detail
			}
			if !rolloutDone && now.Sub(v.start) >= cfg.RolloutTimeout {
				return OutcomeIneffective, fmt.Sprintf("rollout not complete within %s: %s", cfg.RolloutTimeout, rolloutDetail), 0
			}
		}
		if !recovered && rd != nil {
			firing, err := alertFiring(ctx, rd, v.alert)
			readErr = err
			switch {
			case err != nil:
			case firing:
				seenFiring, recoveredAt = true, time.Time{}
			case !seenFiring:
				// The alert was firing when the action started. A source
				// that never reports it (another Prometheus, relabelled
				// labels) says nothing about recovery.
			case recoveredAt.IsZero():
				// Seen once: a second read confirms it, so that a series
				// briefly missing around a rule evaluation is not taken
				// for recovery.
				recoveredAt = now
			default:
				recovered = true
			}
		}
		if rolloutDone && recovered {
			return OutcomeEffective, joinDetail(rolloutDetail, fmt.Sprintf("alert stopped firing %s after the action", recoveredAt.Sub(v.start).Round(time.Second))), recoveredAt.Sub(v.start)
		}
		if now.Sub(v.start) >= cfg.Window {
			switch {
			case !rolloutDone:
				return OutcomeIneffective, "rollout not complete: " + rolloutDetail, 0
			case rd == nil:
				return OutcomeInconclusive, joinDetail(rolloutDetail, "no resolved notification within verify.window and "+errNoAlertSource.Error()), 0
			case readErr != nil:
				return OutcomeInconclusive, joinDetail(rolloutDetail, fmt.Sprintf("cannot read alert state from %s: %v", rd, readErr)), 0
			case !seenFiring:
				return OutcomeInconclusive, joinDetail(rolloutDetail, fmt.Sprintf("%s never reported the alert firing (is it the source that evaluates the rule?)", rd)), 0
			}
			return OutcomeIneffective, joinDetail(rolloutDetail, fmt.Sprintf("alert still firing %s after the action (verify.window)", cfg.Window)), 0
		}
		select {
		case <-ctx.Done():
			return OutcomeInconclusive, "verification abandoned: shutting down", 0
		case <-v.resolved:
			if recoveredAt.IsZero() {
				recoveredAt = r.now()
			}
			recovered = true
		case <-time.After(cfg.PollInterval):
		}
	}
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// verifyReader is where verification reads the alert: Prometheus, which
// evaluates the rule, else Alertmanager.
func (r *Remediator) verifyReader() AlertReader {
	if r.prometheus != nil {
		return r.prometheus
	}
	return r.alertmanager
}

// readRollout reads the rollout state of the target Deployment. The first
// read after the action (generation 0) asks the API server, so that the
// rollout the action started is seen; later ones come from the informer's
// cache unless its copy is older than that generation or it has not synced.
func (r *Remediator) readRollout(ctx context.Context, t target, generation *int64) (rollout, error) {
	d, ok := r.objects.deployment(t.Namespace, t.Name)
	if !ok || d == nil || *generation == 0 || d.Generation < *generation {
		var err error
		d, err = r.kube.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			d, err = nil, nil
		}
		if err != nil {
			return rollout{}, fmt.Errorf("read deployment %s/%s: %w", t.Namespace, t.Name, err)
		}
	}
	if d == nil {
		return rollout{failed: true, detail: fmt.Sprintf("deployment %s/%s is gone", t.Namespace, t.Name)}, nil
	}
	*generation = max(*generation, d.Generation)
	return rolloutState(d), nil
}

// verified records a verification outcome in the target's state. An
// ineffective action counts towards the breaker like a failed one: failed
// actions (st.Failures) plus ineffective ones claimed within the breaker's
// window are compared with breaker.failures. They are counted from the
// occurrence history because a later action that runs without error resets
// st.Failures. It returns true when this outcome opened the breaker.
func verified(st *targetState, key, outcome string, now time.Time, b BreakerConfig) (opened bool) {
	for i := range st.Occurrences {
		if st.Occurrences[i].Key == key {
			st.Occurrences[i].Outcome = outcome
		}
	}
	if outcome != OutcomeIneffective {
		return false
	}
	if st.WindowStart.IsZero() || now.Sub(st.WindowStart) > b.Window {
		st.WindowStart = now
		st.Failures, st.Refires = 0, 0
	}
	n := st.Failures + 1 // this one
	for _, o := range st.Occurrences {
		if o.Key != key && o.Outcome == OutcomeIneffective && !o.At.Before(st.WindowStart) {
			n++
		}
	}
	if n >= b.Failures && !now.Before(st.BreakerOpenUntil) {
		st.BreakerOpenUntil = now.Add(b.OpenFor)
		return true
	}
	return false
}

// recordVerification stores, audits and counts a verification outcome:
// one log line, an Event on a Kubernetes target, the outcome counter and,
// when effective, the time to recovery.
func (r *Remediator) recordVerification(ctx context.Context, v verification, outcome, detail string, recovery time.Duration) {
	p := v.snap.policy
	// The outcome is recorded even when shutdown ended the wait.
	sctx := context.WithoutCancel(ctx)
	var opened bool
	var openUntil time.Time
	err := retryStore(ctx, p.Defaults.RetryFor, func() error {
		return v.store.update(sctx, v.target, func(st *targetState) bool {
			opened = verified(st, v.key, outcome, r.now(), p.Breaker)
			openUntil = st.BreakerOpenUntil
			for i := range st.Occurrences {
				if st.Occurrences[i].Key == v.key && outcome == OutcomeEffective {
					st.Occurrences[i].RecoveredAfter = int64((recovery + time.Second - 1) / time.Second) // whole seconds, rounded up
				}
			}
			return true
		})
	}, r.retryLogger(v.target))
	if err != nil {
		r.logger.Error("cannot record verification outcome", "target", v.target.String(), "namespace", v.target.Namespace, "outcome", outcome, "err", err)
	} else {
		// The breaker gauge follows the store, whichever step opened it.
		r.metrics.breakerOpen.set(v.target, openUntil)
	}
	level := slog.LevelInfo
	if outcome != OutcomeEffective {
		level = slog.LevelWarn
	}
	r.logger.LogAttrs(ctx, level, "remediation verified",
		slog.String("alertname", v.rec.Alertname),
		slog.String("fingerprint", v.rec.Fingerprint),
		slog.Time("starts_at", v.rec.StartsAt),
		slog.String("rule", v.rec.Rule),
		slog.String("action", string(v.rec.Action)),
		slog.String("namespace", v.target.Namespace),
		slog.String("target", v.target.String()),
		slog.String("outcome", outcome),
		slog.String("detail", detail),
		slog.Float64("time_to_recovery_seconds", recovery.Seconds()),
	)
	r.verifyMetrics.outcomes.WithLabelValues(v.rec.Rule, string(v.rec.Action), outcome).Inc()
	shown := v.rec
	shown.Outcome, shown.Reason, shown.Detail = outcome, "verification", detail
	r.recent.add(r.now(), shown)
	if outcome == OutcomeEffective {
		r.verifyMetrics.timeToRecovery.WithLabelValues(v.rec.Rule, string(v.rec.Action)).Observe(recovery.Seconds())
	}
	if v.target.Kind == "deployment" && r.kube != nil {
		reason, eventType := "RemediationEffective", corev1.EventTypeNormal
		switch outcome {
		case OutcomeIneffective:
			reason, eventType = "RemediationIneffective", corev1.EventTypeWarning
		case OutcomeInconclusive:
			reason = "RemediationInconclusive"
		}
		r.createEvent(sctx, v.target, reason, eventType, fmt.Sprintf("%s %s for alert %s (fingerprint %s, rule %s): %s",
			outcome, v.rec.Action, v.rec.Alertname, v.rec.Fingerprint, v.rec.Rule, detail))
	}
	if opened {
		r.escalate(sctx, v.target, v.rec.Alertname, fmt.Sprintf("%d failed or ineffective actions within %s", p.Breaker.Failures, p.Breaker.Window))
	}
}
