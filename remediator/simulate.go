package remediator

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	amtemplate "github.com/prometheus/alertmanager/template"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// A simulation replays a history of alerts through the decisions the
// live remediator makes (policy.evaluate, the policy freezes, block_when,
// the shared rate limit's admitRate, claim, finish, resolveOccurrence and
// verified), in the order handleFiring and handleResolved make them, on a
// virtual clock: each decision's time is the time the alert was (or would
// have been) received. Nothing is written anywhere; the coordination
// records live in a map.
//
// Assumptions, reported with every result:
//   - every action succeeds (the executor is not run);
//   - an action is verified against the same history: effective when the
//     alert stops firing within verify.window, ineffective (which counts
//     towards the breaker exactly as live) when it still fires then;
//   - dry_run settings are ignored: the simulation shows what the policy
//     would do switched on;
//   - the rate limit is the one shared by all replicas (as with
//     --coordination.namespace).

// SimulateOptions tune a simulation.
type SimulateOptions struct {
	// From and To bound the simulated period. Deliveries outside it are
	// not replayed.
	From, To time.Time
	// Source describes where the history came from, for the report.
	Source string
	// Kube, when set, is read (never written) for the freeze annotations
	// of namespaces and Deployments and for each Deployment's last
	// rollout. Nil: those gates are reported as not evaluated.
	Kube   kubernetes.Interface
	Logger *slog.Logger
}

// FiringPeriod is one occurrence of one alert: from when it fired until it
// stopped.
type FiringPeriod struct {
	Labels map[string]string
	Start  time.Time
	// End is when the alert stopped firing; zero when it still fired at
	// the end of the history.
	End time.Time
}

// Notification is one alert of one webhook delivery, with the time the
// remediator received it.
type Notification struct {
	Received time.Time
	Alert    amtemplate.Alert
}

// SimulationInput is what a simulation replays: the deliveries, and the
// firing periods that block_when and verification read.
type SimulationInput struct {
	Periods       []FiringPeriod
	Notifications []Notification
}

// SimReport is the result of a simulation. Every list is sorted, so that
// the same input gives the same report.
type SimReport struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Source string    `json:"source"`
	// Deliveries counts the firing and resolved alert deliveries replayed.
	Deliveries   int      `json:"deliveries"`
	Assumptions  []string `json:"assumptions"`
	NotEvaluated []string `json:"not_evaluated"`
	// Actions the policy would have taken, in time order.
	Actions []SimAction `json:"actions"`
	// ByTarget summarises actions and refusals per rule and target.
	ByTarget []SimRuleTarget `json:"by_rule_and_target"`
	// Refusals counts the refused firing deliveries by reason.
	Refusals []SimCount `json:"refusals"`
	// Refused lists the refused firing deliveries in time order, except
	// repeats of an occurrence already decided (duplicate) and alerts no
	// rule matches (no_matching_rule), which are only counted.
	Refused            []SimRefusal        `json:"refused"`
	PeakActionsPerHour int                 `json:"peak_actions_per_hour"`
	PeakHourStart      time.Time           `json:"peak_hour_start,omitzero"`
	BreakerOpenings    []SimBreakerOpening `json:"breaker_openings"`
	// Targets lists every target an action would have touched.
	Targets []string `json:"targets_touched"`
}

// SimAction is one action the policy would have taken.
type SimAction struct {
	Time        time.Time `json:"time"`
	Rule        string    `json:"rule"`
	Action      string    `json:"action"`
	Namespace   string    `json:"namespace,omitempty"`
	Target      string    `json:"target"`
	Alertname   string    `json:"alertname"`
	Fingerprint string    `json:"fingerprint"`
	StartsAt    time.Time `json:"starts_at"`
	// ApprovalRequired: the rule waits for a person (approval: required);
	// the simulation assumes the proposal is approved at once, so live the
	// action comes as much later as the approval took.
	ApprovalRequired bool `json:"approval_required,omitempty"`
	// Verification is effective, ineffective or inconclusive, decided
	// from the history at VerifiedAt.
	Verification          string    `json:"verification"`
	VerifiedAt            time.Time `json:"verified_at,omitzero"`
	TimeToRecoverySeconds float64   `json:"time_to_recovery_seconds,omitempty"`
}

// SimRuleTarget is what one rule would have done to one target.
type SimRuleTarget struct {
	Rule        string      `json:"rule"`
	Action      string      `json:"action"`
	Namespace   string      `json:"namespace,omitempty"`
	Target      string      `json:"target"`
	Actions     int         `json:"actions"`
	ActionTimes []time.Time `json:"action_times"`
	Refusals    []SimCount  `json:"refusals"`
}

// SimCount is a number of refusals for one reason.
type SimCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// SimRefusal is a firing delivery the policy would have refused.
type SimRefusal struct {
	Time        time.Time `json:"time"`
	Rule        string    `json:"rule,omitempty"`
	Action      string    `json:"action,omitempty"`
	Namespace   string    `json:"namespace,omitempty"`
	Target      string    `json:"target,omitempty"`
	Alertname   string    `json:"alertname"`
	Fingerprint string    `json:"fingerprint"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail"`
}

// SimBreakerOpening is a circuit breaker that would have opened.
type SimBreakerOpening struct {
	Time      time.Time `json:"time"`
	Until     time.Time `json:"until"`
	Namespace string    `json:"namespace,omitempty"`
	Target    string    `json:"target"`
	Rule      string    `json:"rule"`
	Alertname string    `json:"alertname"`
	Detail    string    `json:"detail"`
}

// simAssumptions are printed with every report.
var simAssumptions = []string{
	"every action succeeds; the executor is not run (opt-out annotations and the recycle blast radius are not checked)",
	"verification reads the same history: effective when the alert stops firing within verify.window, ineffective (counted towards the breaker like live) when it still fires then, inconclusive when the history ends first",
	"dry_run settings are ignored: the result is what the policy would do switched on",
	"the rate limit is the one shared by all replicas (as with --coordination.namespace)",
	"each delivery is decided when it is received, so none is stale (defaults.max_delay)",
	"a rule with approval: required is approved at once; such actions are marked (after approval), and live they come when a person approves",
}

// Simulate replays in through the policy's decisions on a virtual clock.
func Simulate(ctx context.Context, p *Policy, in SimulationInput, opts SimulateOptions) (*SimReport, error) {
	if p == nil {
		return nil, errors.New("simulate: policy is required")
	}
	if !opts.To.After(opts.From) {
		return nil, fmt.Errorf("simulate: the end %s must be after the start %s", opts.To.UTC().Format(time.RFC3339), opts.From.UTC().Format(time.RFC3339))
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := newSimulator(p, in, opts)
	notes := slices.Clone(in.Notifications)
	sort.SliceStable(notes, func(i, j int) bool { return notes[i].Received.Before(notes[j].Received) })
	for _, n := range notes {
		if n.Received.Before(opts.From) || n.Received.After(opts.To) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Verifications that end before this delivery come first, as
		// they would live.
		s.verifyUntil(n.Received)
		if err := s.deliver(ctx, n); err != nil {
			return nil, err
		}
	}
	s.verifyUntil(opts.To)
	return s.report(), nil
}

type simulator struct {
	p      *Policy
	opts   SimulateOptions
	hist   *historyReader
	gates  *Remediator // its blockingAlert reads hist
	states map[target]*targetState
	rate   []rateEntry
	// resolvedSeen: occurrences whose resolved notification was received.
	resolvedSeen map[string]bool
	pending      verifyQueue
	seq          int
	kubeObjects  map[target]*simKubeObjects

	deliveries int
	actions    []*SimAction
	byTarget   map[simTargetKey]*SimRuleTarget
	refusals   map[simTargetKey]map[string]int
	total      map[string]int
	refused    []SimRefusal
	openings   []SimBreakerOpening
}

type simTargetKey struct{ rule, namespace, target string }

func newSimulator(p *Policy, in SimulationInput, opts SimulateOptions) *simulator {
	h := newHistoryReader(in.Periods)
	return &simulator{
		p:            p,
		opts:         opts,
		hist:         h,
		gates:        &Remediator{alertmanager: h, logger: opts.Logger, now: h.Now},
		states:       map[target]*targetState{},
		resolvedSeen: map[string]bool{},
		kubeObjects:  map[target]*simKubeObjects{},
		byTarget:     map[simTargetKey]*SimRuleTarget{},
		refusals:     map[simTargetKey]map[string]int{},
		total:        map[string]int{},
	}
}

func (s *simulator) state(t target) *targetState {
	st, ok := s.states[t]
	if !ok {
		st = &targetState{}
		s.states[t] = st
	}
	return st
}

// deliver decides on one delivered alert, as handle does.
func (s *simulator) deliver(ctx context.Context, n Notification) error {
	s.deliveries++
	s.hist.now = n.Received
	a := &n.Alert
	if a.Status == "resolved" {
		s.resolvedSeen[alertOccurrence(a.Fingerprint, a.StartsAt)] = true
	}
	for _, d := range s.p.evaluate(a, false) {
		if a.Status == "resolved" {
			s.resolved(a, d, n.Received)
			continue
		}
		if err := s.firing(ctx, a, d, n.Received); err != nil {
			return err
		}
	}
	return nil
}

// resolved closes out the occurrence's action, as handleResolved does.
func (s *simulator) resolved(a *amtemplate.Alert, d decision, now time.Time) {
	if d.SkipReason != "" {
		return
	}
	occ := occurrence{Key: occurrenceKey(a.Fingerprint, a.StartsAt, string(d.Rule.Action)), Fingerprint: a.Fingerprint}
	resolveOccurrence(s.state(d.Target), occ, now)
}

// firing decides on a firing alert, in the order of handleFiring,
// claimAndAct and reserveRate: gates, the shared rate limit (a slot is
// taken only when the claim would otherwise go ahead), the resolution
// check, claim.
func (s *simulator) firing(ctx context.Context, a *amtemplate.Alert, d decision, now time.Time) error {
	if d.SkipReason != "" {
		s.refuse(a, d, now, d.SkipReason, d.Detail)
		return nil
	}
	reason, detail, err := s.gate(ctx, d, now)
	if err != nil {
		return err
	}
	if reason != "" {
		s.refuse(a, d, now, reason, detail)
		return nil
	}
	st := s.state(d.Target)
	in := firingClaim(a, d, s.p.Breaker)
	in.Now = now
	rl := s.p.RateLimit
	reserved, rateDetail := false, ""
	if rl.ActionsPerHour > 0 || rl.MaxTargetsPerNamespace > 0 {
		probe := *st
		probe.Occurrences = slices.Clone(st.Occurrences)
		if claim(&probe, in).Proceed {
			next, why := admitRate(s.rate, rateEntry{At: now, Namespace: d.Target.Namespace, Target: d.Target.String(), Key: in.Occ.Key}, rl)
			if why == "" {
				s.rate, reserved = next, true
			} else {
				in.RateOK, rateDetail = false, why
			}
		}
	}
	giveBack := func() {
		if reserved {
			s.rate = s.rate[:len(s.rate)-1]
		}
	}
	if resolvedEarly(st, in.Occ.Key) || (s.resolvedSeen[alertOccurrence(a.Fingerprint, a.StartsAt)] && !recorded(st, in.Occ.Key)) {
		giveBack()
		s.refuse(a, d, now, ReasonResolvedBeforeAction, "the alert's resolved notification arrived before this firing delivery could act")
		return nil
	}
	v := claim(st, in)
	if v.Opened {
		s.opened(d, a, now, st.BreakerOpenUntil, v.Detail)
	}
	if !v.Proceed {
		giveBack()
		detail := v.Detail
		if v.Reason == ReasonRateLimited && rateDetail != "" {
			detail = rateDetail
		}
		s.refuse(a, d, now, v.Reason, detail)
		return nil
	}
	// The action is assumed to succeed.
	finish(st, in.Occ.Key, outcomeActed, now, s.p.Breaker)
	act := &SimAction{
		Time:        now,
		Rule:        d.Rule.Name,
		Action:      string(d.Rule.Action),
		Namespace:   d.Target.Namespace,
		Target:      d.Target.String(),
		Alertname:   a.Labels["alertname"],
		Fingerprint: a.Fingerprint,
		StartsAt:    a.StartsAt,

		ApprovalRequired: d.NeedsApproval,
	}
	s.actions = append(s.actions, act)
	rt := s.ruleTarget(d)
	rt.Actions++
	rt.ActionTimes = append(rt.ActionTimes, now)
	s.scheduleVerification(a, d, act, in.Occ.Key)
	return nil
}

// gate is the live gate's checks that history can answer: the policy's
// freezes, freeze annotations and recent rollouts (with Kube), block_when.
func (s *simulator) gate(ctx context.Context, d decision, now time.Time) (reason, detail string, err error) {
	for _, f := range s.p.Freezes {
		if f.active(now) {
			return ReasonFrozen, "policy freeze: " + f.Reason, nil
		}
	}
	if s.opts.Kube != nil && d.Target.Kind == "deployment" {
		reason, detail, err = s.kubeGate(ctx, d.Target, now)
		if err != nil || reason != "" {
			return reason, detail, err
		}
	}
	reason, detail = s.gates.blockingAlert(ctx, d.Rule)
	return reason, detail, nil
}

// simKubeObjects are a target's namespace and Deployment as read once.
type simKubeObjects struct {
	nsAnnotations map[string]string
	deployment    *appsv1.Deployment // nil: not found
}

// kubeGate evaluates, from the objects as they are now, what can be
// placed in time: freeze-until annotations against the virtual clock, and
// the Deployment's last rollout (recent_rollout) once the virtual clock
// has passed it. Whether a rollout was in progress at a past time is not
// recorded anywhere, so rollout_in_progress is not evaluated.
func (s *simulator) kubeGate(ctx context.Context, t target, now time.Time) (reason, detail string, err error) {
	objs, ok := s.kubeObjects[t]
	if !ok {
		objs = &simKubeObjects{}
		ns, err := s.opts.Kube.CoreV1().Namespaces().Get(ctx, t.Namespace, metav1.GetOptions{})
		switch {
		case err == nil:
			objs.nsAnnotations = ns.Annotations
		case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		default:
			return "", "", fmt.Errorf("read namespace %s: %w", t.Namespace, err)
		}
		dep, err := s.opts.Kube.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		switch {
		case err == nil:
			objs.deployment = dep
		case apierrors.IsNotFound(err):
		default:
			return "", "", fmt.Errorf("read deployment %s/%s: %w", t.Namespace, t.Name, err)
		}
		s.kubeObjects[t] = objs
	}
	if until, why, frozen := freezeAnnotation(objs.nsAnnotations, now); frozen {
		return ReasonFrozen, fmt.Sprintf("namespace %s frozen until %s: %s", t.Namespace, until, why), nil
	}
	dep := objs.deployment
	if dep == nil {
		return "", "", nil
	}
	if until, why, frozen := freezeAnnotation(dep.Annotations, now); frozen {
		return ReasonFrozen, fmt.Sprintf("deployment %s frozen until %s: %s", t.Name, until, why), nil
	}
	recent := s.p.Gates.RecentRollout
	if recent <= 0 || dep.Generation <= 1 {
		return "", "", nil
	}
	lastAction := s.state(t).lastActionAt()
	// Only a rollout the virtual clock has passed counts; the
	// remediator's own (managedFields) does not.
	if last := lastRollout(dep); !last.IsZero() && !now.Before(last) && now.Sub(last) < recent && !ownRollout(dep, lastAction) {
		return ReasonRecentRollout, fmt.Sprintf("deployment %s: rollout progressed %s earlier (gates.recent_rollout %s)", t.Name, now.Sub(last).Round(time.Second), recent), nil
	}
	return "", "", nil
}

func (s *simulator) ruleTarget(d decision) *SimRuleTarget {
	k := simTargetKey{rule: d.Rule.Name, namespace: d.Target.Namespace, target: d.Target.String()}
	rt, ok := s.byTarget[k]
	if !ok {
		rt = &SimRuleTarget{Rule: d.Rule.Name, Action: string(d.Rule.Action), Namespace: d.Target.Namespace, Target: d.Target.String()}
		s.byTarget[k] = rt
	}
	return rt
}

// refuse counts a refused firing delivery, per rule and target when the
// policy got as far as naming them, and lists it unless it is a repeat of
// an occurrence already decided (duplicate) or an alert no rule is for.
func (s *simulator) refuse(a *amtemplate.Alert, d decision, now time.Time, reason, detail string) {
	s.total[reason]++
	if reason != ReasonDuplicate && reason != ReasonNoMatchingRule {
		r := SimRefusal{Time: now, Alertname: a.Labels["alertname"], Fingerprint: a.Fingerprint, Reason: reason, Detail: detail}
		if d.Rule != nil {
			r.Rule, r.Action = d.Rule.Name, string(d.Rule.Action)
		}
		if d.Target.Name != "" {
			r.Namespace, r.Target = d.Target.Namespace, d.Target.String()
		}
		s.refused = append(s.refused, r)
	}
	if d.Rule == nil || d.Target.Name == "" {
		return
	}
	rt := s.ruleTarget(d)
	k := simTargetKey{rule: rt.Rule, namespace: rt.Namespace, target: rt.Target}
	if s.refusals[k] == nil {
		s.refusals[k] = map[string]int{}
	}
	s.refusals[k][reason]++
}

func (s *simulator) opened(d decision, a *amtemplate.Alert, now, until time.Time, detail string) {
	s.openings = append(s.openings, SimBreakerOpening{
		Time: now, Until: until, Namespace: d.Target.Namespace, Target: d.Target.String(),
		Rule: d.Rule.Name, Alertname: a.Labels["alertname"], Detail: detail,
	})
}

// pendingVerification is an action whose verification ends at due.
type pendingVerification struct {
	due     time.Time
	seq     int
	outcome string
	target  target
	key     string
	d       decision
	alert   *amtemplate.Alert
}

type verifyQueue []*pendingVerification

func (q verifyQueue) Len() int { return len(q) }
func (q verifyQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q verifyQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *verifyQueue) Push(x any)   { *q = append(*q, x.(*pendingVerification)) }
func (q *verifyQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// scheduleVerification decides from the history how the action's
// verification ends, as verify would have seen it: effective when the
// alert stops firing within verify.window after the action, ineffective
// when it still fires at the end of the window, inconclusive when the
// history does not show the alert firing at the action or ends before
// the window does.
func (s *simulator) scheduleVerification(a *amtemplate.Alert, d decision, act *SimAction, key string) {
	window := s.p.Verify.Window
	pv := &pendingVerification{target: d.Target, key: key, d: d, alert: a}
	period, ok := s.hist.periodAt(a.Labels, act.Time)
	switch {
	case !ok:
		act.Verification = OutcomeInconclusive
		return
	case !period.End.IsZero() && !period.End.After(act.Time.Add(window)):
		pv.due, pv.outcome = period.End, OutcomeEffective
		act.TimeToRecoverySeconds = period.End.Sub(act.Time).Seconds()
	case s.opts.To.Before(act.Time.Add(window)):
		act.Verification = OutcomeInconclusive
		return
	default:
		pv.due, pv.outcome = act.Time.Add(window), OutcomeIneffective
	}
	act.Verification, act.VerifiedAt = pv.outcome, pv.due
	s.seq++
	pv.seq = s.seq
	heap.Push(&s.pending, pv)
}

// verifyUntil records the verifications that end at or before t, as
// recordVerification does: an ineffective action counts towards the
// breaker.
func (s *simulator) verifyUntil(t time.Time) {
	for s.pending.Len() > 0 && !s.pending[0].due.After(t) {
		pv := heap.Pop(&s.pending).(*pendingVerification)
		st := s.state(pv.target)
		if verified(st, pv.key, pv.outcome, pv.due, s.p.Breaker) {
			s.opened(pv.d, pv.alert, pv.due, st.BreakerOpenUntil,
				fmt.Sprintf("%d failed or ineffective actions within %s", s.p.Breaker.Failures, s.p.Breaker.Window))
		}
	}
}

// report sorts what the simulation recorded.
func (s *simulator) report() *SimReport {
	r := &SimReport{
		From: s.opts.From.UTC(), To: s.opts.To.UTC(), Source: s.opts.Source,
		Deliveries:      s.deliveries,
		Assumptions:     simAssumptions,
		Actions:         []SimAction{},
		ByTarget:        []SimRuleTarget{},
		Refusals:        sortedCounts(s.total),
		Refused:         []SimRefusal{},
		BreakerOpenings: s.openings,
		Targets:         []string{},
	}
	if s.opts.Kube == nil {
		r.NotEvaluated = []string{
			"rollout_in_progress and recent_rollout (no --kubeconfig)",
			"freeze annotations on namespaces and Deployments (no --kubeconfig)",
		}
	} else {
		r.NotEvaluated = []string{
			"rollout_in_progress (the progress of a past rollout is not recorded); recent_rollout uses each Deployment's last rollout as read now",
			"freeze annotations are read now and applied by their freeze-until time",
		}
	}
	touched := map[string]bool{}
	for _, a := range s.actions {
		x := *a
		x.Time, x.StartsAt = x.Time.UTC(), x.StartsAt.UTC()
		if !x.VerifiedAt.IsZero() {
			x.VerifiedAt = x.VerifiedAt.UTC()
		}
		r.Actions = append(r.Actions, x)
		touched[targetLabel(x.Namespace, x.Target)] = true
	}
	sort.SliceStable(r.Actions, func(i, j int) bool {
		a, b := r.Actions[i], r.Actions[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		return strings.Join([]string{a.Namespace, a.Target, a.Rule, a.Fingerprint}, "\x00") < strings.Join([]string{b.Namespace, b.Target, b.Rule, b.Fingerprint}, "\x00")
	})
	for k, rt := range s.byTarget {
		x := *rt
		x.ActionTimes = make([]time.Time, len(rt.ActionTimes))
		for i, t := range rt.ActionTimes {
			x.ActionTimes[i] = t.UTC()
		}
		x.Refusals = sortedCounts(s.refusals[k])
		r.ByTarget = append(r.ByTarget, x)
	}
	sort.Slice(r.ByTarget, func(i, j int) bool {
		a, b := r.ByTarget[i], r.ByTarget[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		return targetLabel(a.Namespace, a.Target) < targetLabel(b.Namespace, b.Target)
	})
	// Deliveries are decided in time order, so refused is in time order.
	for _, x := range s.refused {
		x.Time = x.Time.UTC()
		r.Refused = append(r.Refused, x)
	}
	for i := range r.BreakerOpenings {
		o := &r.BreakerOpenings[i]
		o.Time, o.Until = o.Time.UTC(), o.Until.UTC()
	}
	sort.SliceStable(r.BreakerOpenings, func(i, j int) bool { return r.BreakerOpenings[i].Time.Before(r.BreakerOpenings[j].Time) })
	for t := range touched {
		r.Targets = append(r.Targets, t)
	}
	sort.Strings(r.Targets)
	r.PeakActionsPerHour, r.PeakHourStart = peakPerHour(r.Actions)
	return r
}

// targetLabel names a target with its namespace: "rust-security/deployment/auth-service".
func targetLabel(namespace, t string) string {
	if namespace == "" {
		return t
	}
	return namespace + "/" + t
}

func sortedCounts(m map[string]int) []SimCount {
	out := make([]SimCount, 0, len(m))
	for reason, n := range m {
		out = append(out, SimCount{Reason: reason, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// peakPerHour is the largest number of actions within one hour starting
// at an action, and the first such hour.
func peakPerHour(acts []SimAction) (int, time.Time) {
	best, at := 0, time.Time{}
	j := 0
	for i := range acts {
		if j < i {
			j = i
		}
		for j < len(acts) && acts[j].Time.Sub(acts[i].Time) < time.Hour {
			j++
		}
		if n := j - i; n > best {
			best, at = n, acts[i].Time
		}
	}
	return best, at
}

// historyReader answers the live code's alert reads (AlertReader) from the
// firing periods, at the virtual time now.
type historyReader struct {
	now     time.Time
	periods []FiringPeriod
	// byAlert indexes periods by their label set (labelsKey), in start
	// order.
	byAlert map[string][]int
	// byName indexes periods by alertname, in start order.
	byName map[string][]int
}

func newHistoryReader(periods []FiringPeriod) *historyReader {
	h := &historyReader{periods: slices.Clone(periods), byAlert: map[string][]int{}, byName: map[string][]int{}}
	sort.SliceStable(h.periods, func(i, j int) bool { return h.periods[i].Start.Before(h.periods[j].Start) })
	for i, p := range h.periods {
		k := labelsKey(p.Labels)
		h.byAlert[k] = append(h.byAlert[k], i)
		h.byName[p.Labels["alertname"]] = append(h.byName[p.Labels["alertname"]], i)
	}
	return h
}

// Now is the virtual clock.
func (h *historyReader) Now() time.Time { return h.now }

func (h *historyReader) String() string { return "alert history" }

func (p FiringPeriod) firingAt(t time.Time) bool {
	return !t.Before(p.Start) && (p.End.IsZero() || t.Before(p.End))
}

// Firing returns the label sets of the alerts firing at the virtual time
// that match ms, sorted.
func (h *historyReader) Firing(_ context.Context, ms labels.Matchers) ([]map[string]string, error) {
	candidates := func(yield func(int) bool) {
		for _, m := range ms {
			if m.Name == "alertname" && m.Type == labels.MatchEqual {
				for _, i := range h.byName[m.Value] {
					if !yield(i) {
						return
					}
				}
				return
			}
		}
		for i := range h.periods {
			if !yield(i) {
				return
			}
		}
	}
	var out []map[string]string
	for i := range candidates {
		p := h.periods[i]
		if p.Start.After(h.now) {
			break
		}
		if p.firingAt(h.now) && matchesAll(ms, p.Labels) {
			out = append(out, p.Labels)
		}
	}
	sort.Slice(out, func(i, j int) bool { return labelsKey(out[i]) < labelsKey(out[j]) })
	return out, nil
}

// periodAt returns the firing period of the alert with exactly these
// labels that covers t.
func (h *historyReader) periodAt(lset map[string]string, t time.Time) (FiringPeriod, bool) {
	idx := h.byAlert[labelsKey(lset)]
	for k := len(idx) - 1; k >= 0; k-- {
		p := h.periods[idx[k]]
		if p.Start.After(t) {
			continue
		}
		return p, p.firingAt(t)
	}
	return FiringPeriod{}, false
}

// labelsKey is a canonical form of a label set.
func labelsKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	return b.String()
}
