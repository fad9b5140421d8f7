package remediator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/remediator/actions"
)

// Values of a rule's approval field.
const (
	ApprovalRequired = "required"
	ApprovalNone     = "none"
)

// ApprovalsConfig says how long a proposed action waits for a person and
// how often the replicas look at the approval records.
type ApprovalsConfig struct {
	// ExpireAfter: a proposal nobody approved within this time expires
	// and never acts.
	ExpireAfter time.Duration `yaml:"expire_after"`
	// PollInterval: how often each replica reads the approval records
	// (to act on approvals, count decisions, expire proposals) and
	// removes expired block-source entries.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// DefaultApprovalsConfig holds the defaults of the approvals block.
var DefaultApprovalsConfig = ApprovalsConfig{ExpireAfter: 30 * time.Minute, PollInterval: 5 * time.Second}

// maxApprovalWait bounds approvals.expire_after.
const maxApprovalWait = 24 * time.Hour

func (c *ApprovalsConfig) applyDefaults() {
	if c.ExpireAfter == 0 {
		c.ExpireAfter = DefaultApprovalsConfig.ExpireAfter
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultApprovalsConfig.PollInterval
	}
}

func (c *ApprovalsConfig) validate() error {
	if c.ExpireAfter <= 0 || c.ExpireAfter > maxApprovalWait {
		return fmt.Errorf("approvals.expire_after: must be more than 0 and at most %s, got %s", maxApprovalWait, c.ExpireAfter)
	}
	if c.PollInterval <= 0 || c.PollInterval > c.ExpireAfter {
		return fmt.Errorf("approvals.poll_interval: must be more than 0 and at most approvals.expire_after, got %s", c.PollInterval)
	}
	return nil
}

// States of an approval record. A person moves pending to approved or
// denied; the replicas move pending to closed (expired), denied to closed,
// and approved to executing (the one replica whose write wins acts) and
// then to closed.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExecuting = "executing"
	StateClosed    = "closed"
)

// Decisions on an approval, the decision label of
// warden_remediator_approvals_total.
const (
	DecisionApproved = "approved"
	DecisionDenied   = "denied"
	DecisionExpired  = "expired"
)

var approvalDecisions = []string{DecisionApproved, DecisionDenied, DecisionExpired}

// outcomePending is the audit outcome of a proposal waiting for a person.
const outcomePending = "pending_approval"

// The approval record is a Lease per target in the target's namespace:
// its labels select it (by id, by state), an annotation holds the record.
const (
	labelApprovalID    = "warden.io/approval-id"
	labelApprovalState = "warden.io/approval-state"
	annoApproval       = "warden.io/approval"
)

// Errors of Decide.
var (
	ErrApprovalNotFound = errors.New("no such approval")
	ErrApprovalDecided  = errors.New("approval already decided")
	ErrApprovalExpired  = errors.New("approval expired")
)

// Approval is one proposed action and what became of it.
type Approval struct {
	ID        string       `json:"id"`
	Namespace string       `json:"namespace"`
	Rule      string       `json:"rule"`
	Action    actions.Kind `json:"action"`
	// Target is "<kind>/<name>", e.g. "source/203.0.113.7-32".
	Target     string        `json:"target"`
	Summary    string        `json:"summary"`
	Alert      approvalAlert `json:"alert"`
	ProposedBy string        `json:"proposed_by"`
	ProposedAt time.Time     `json:"proposed_at"`
	ExpiresAt  time.Time     `json:"expires_at"`
	State      string        `json:"state"`
	Decision   string        `json:"decision,omitempty"`
	// Approver is the person who approved or denied, as the API server
	// (warden-remediator approve) or the approvals endpoint named them.
	Approver  string    `json:"approver,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Holder    string    `json:"holder,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

type approvalAlert struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Fingerprint string            `json:"fingerprint"`
	StartsAt    time.Time         `json:"starts_at"`
}

func approvalLeaseName(t target) string {
	return leaseName(target{Kind: "approval-" + t.Kind, Name: t.Name})
}

// approvalID is the same for every delivery of an occurrence, on every
// replica, so that they all propose one record.
func approvalID(occKey string, t target) string {
	sum := sha256.Sum256([]byte(occKey + "|" + t.Namespace + "/" + t.String()))
	return hex.EncodeToString(sum[:])[:12]
}

func decodeApproval(l *coordinationv1.Lease) (Approval, bool, error) {
	v, ok := l.Annotations[annoApproval]
	if !ok {
		return Approval{}, false, nil
	}
	var a Approval
	if err := json.Unmarshal([]byte(v), &a); err != nil {
		return Approval{}, false, fmt.Errorf("%w: %s: %w", errCorruptState, annoApproval, err)
	}
	return a, true, nil
}

func encodeApproval(l *coordinationv1.Lease, a Approval) {
	b, _ := json.Marshal(a) // plain struct, cannot fail
	l.Annotations[annoApproval] = string(b)
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[labelApprovalID] = a.ID
	l.Labels[labelApprovalState] = a.State
}

// transitionApproval rewrites the approval record id of ns/name under
// optimistic concurrency: change sees the current record and says whether
// to write it. Of several writers racing (two approvals, an approval and
// the expiry, two replicas), each decides on the record as the one before
// left it. It returns the record as it stands and whether this call wrote.
func transitionApproval(ctx context.Context, kube kubernetes.Interface, ns, name, id, writer string, change func(a *Approval) (bool, error)) (Approval, bool, error) {
	var out Approval
	var wrote bool
	err := updateLease(ctx, kube, nil, ns, name, writer, func(l *coordinationv1.Lease) (bool, error) {
		wrote = false
		a, ok, err := decodeApproval(l)
		if err != nil {
			return false, err
		}
		if !ok || a.ID != id {
			return false, fmt.Errorf("%w: %s", ErrApprovalNotFound, id)
		}
		write, err := change(&a)
		out = a
		if err != nil || !write {
			return false, err
		}
		encodeApproval(l, a)
		wrote = true
		return true, nil
	})
	return out, wrote, err
}

// findApproval returns the name of the Lease holding approval id.
func findApproval(ctx context.Context, kube kubernetes.Interface, ns, id string) (string, error) {
	list, err := kube.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{LabelSelector: labelApprovalID + "=" + id})
	if err != nil {
		return "", fmt.Errorf("find approval %s in %s: %w", id, ns, err)
	}
	if len(list.Items) != 1 {
		return "", fmt.Errorf("%w: %s in namespace %s", ErrApprovalNotFound, id, ns)
	}
	return list.Items[0].Name, nil
}

// Decide records a person's decision on a pending approval with a
// conditional write: it fails when the approval is no longer pending
// (another person decided, or it expired) or expires at now. approver is
// recorded and named in the audit line and Event of the action.
func Decide(ctx context.Context, kube kubernetes.Interface, ns, id string, approve bool, approver string, now time.Time) (Approval, error) {
	if approver == "" {
		return Approval{}, errors.New("decide approval: the approver's name is required")
	}
	name, err := findApproval(ctx, kube, ns, id)
	if err != nil {
		return Approval{}, err
	}
	a, _, err := transitionApproval(ctx, kube, ns, name, id, approver, func(a *Approval) (bool, error) {
		switch {
		case a.State != StatePending:
			return false, fmt.Errorf("%w: %s by %s", ErrApprovalDecided, a.decisionText(), a.Approver)
		case !now.Before(a.ExpiresAt):
			return false, fmt.Errorf("%w at %s", ErrApprovalExpired, a.ExpiresAt.UTC().Format(time.RFC3339))
		}
		a.State, a.Decision = StateDenied, DecisionDenied
		if approve {
			a.State, a.Decision = StateApproved, DecisionApproved
		}
		a.Approver, a.DecidedAt = approver, now
		return true, nil
	})
	return a, err
}

func (a *Approval) decisionText() string {
	if a.Decision != "" {
		return a.Decision
	}
	return a.State
}

// ListApprovals returns the approval records in the namespaces, open ones
// only (pending, approved, denied not yet closed, executing) unless all.
func ListApprovals(ctx context.Context, kube kubernetes.Interface, namespaces []string, all bool) ([]Approval, error) {
	var out []Approval
	for _, ns := range namespaces {
		opts := metav1.ListOptions{LabelSelector: labelApprovalID}
		if !all {
			opts.LabelSelector = labelApprovalState + " in (pending,approved,denied,executing)"
		}
		list, err := kube.CoordinationV1().Leases(ns).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list approvals in %s: %w", ns, err)
		}
		for i := range list.Items {
			if a, ok, err := decodeApproval(&list.Items[i]); err == nil && ok {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(a, b Approval) int { return a.ProposedAt.Compare(b.ProposedAt) })
	return out, nil
}

// approvalMetrics are warden_remediator_approvals_*.
type approvalMetrics struct {
	pending prometheus.Gauge
	total   *prometheus.CounterVec
}

func newApprovalMetrics(reg prometheus.Registerer) (*approvalMetrics, error) {
	m := &approvalMetrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warden_remediator_approvals_pending",
			Help: "Proposed actions waiting for a person's approval, as this replica last read them (every replica reads the same records: use max).",
		}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_remediator_approvals_total",
			Help: "Decisions on proposed actions, by rule and decision (approved, denied, expired); each is counted once, by the replica that recorded it.",
		}, []string{"rule", "decision"}),
	}
	for _, c := range []prometheus.Collector{m.pending, m.total} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register approval metrics: %w", err)
		}
	}
	return m, nil
}

func (m *approvalMetrics) initRules(p *Policy) {
	for _, rule := range p.Rules {
		if rule.Approval == ApprovalRequired {
			for _, d := range approvalDecisions {
				m.total.WithLabelValues(rule.Name, d)
			}
		}
	}
}

// propose records a pending approval for a firing alert whose rule needs
// one, instead of acting. Deliveries of the same occurrence, on any
// replica, find the record and are duplicates; while one proposal for the
// target is pending, another occurrence waits for it to be decided.
func (r *Remediator) propose(ctx context.Context, snap *snapshot, a *amtemplate.Alert, d decision, rec record) record {
	p := snap.policy
	store, err := r.storeFor(snap, d.Target)
	if err != nil {
		return rec.skipped(ReasonUnavailable, err.Error())
	}
	in := firingClaim(a, d, p.Breaker)
	// Ask nobody to approve what the safety checks would refuse anyway.
	st, err := r.readState(ctx, p, store, d.Target)
	if err != nil {
		return rec.skipped(unavailableReason(ctx), err.Error())
	}
	in.Now = r.now()
	if v := claim(&st, in); !v.Proceed {
		return rec.skipped(v.Reason, v.Detail)
	}
	now := r.now()
	id := approvalID(in.Occ.Key, d.Target)
	next := Approval{
		ID: id, Namespace: d.Target.Namespace, Rule: d.Rule.Name, Action: d.Rule.Action,
		Target: d.Target.String(), Summary: d.summary(),
		Alert:      approvalAlert{Name: a.Labels["alertname"], Labels: a.Labels, Fingerprint: a.Fingerprint, StartsAt: a.StartsAt},
		ProposedBy: r.identity, ProposedAt: now, ExpiresAt: now.Add(p.Approvals.ExpireAfter),
		State: StatePending,
	}
	var existing Approval
	var found, lapsed, wrote bool
	err = retryStore(ctx, p.Defaults.RetryFor, func() error {
		return updateLease(ctx, r.kube, nil, d.Target.Namespace, approvalLeaseName(d.Target), r.identity, func(l *coordinationv1.Lease) (bool, error) {
			var err error
			existing, found, err = decodeApproval(l)
			lapsed, wrote = false, false
			if err != nil {
				return false, err
			}
			if found && existing.ID == id {
				return false, nil // this occurrence was proposed already
			}
			if found && existing.State != StateClosed {
				// Another occurrence still waits for (or is carried out
				// after) a decision.
				if existing.State != StatePending || now.Before(existing.ExpiresAt) {
					return false, nil
				}
				lapsed = true
			}
			encodeApproval(l, next)
			wrote = true
			return true, nil
		})
	}, r.retryLogger(d.Target))
	switch {
	case err != nil:
		return rec.skipped(unavailableReason(ctx), "cannot record the approval: "+err.Error())
	case !wrote && existing.ID == id:
		return rec.skipped(ReasonDuplicate, fmt.Sprintf("approval %s already %s", id, existing.decisionText()))
	case !wrote:
		return rec.skipped(ReasonDuplicate, fmt.Sprintf("approval %s for this target is %s", existing.ID, existing.State))
	}
	if lapsed {
		// The earlier proposal expired unseen by the sweep; its expiry is
		// counted by the write that replaced it.
		r.approvals.total.WithLabelValues(existing.Rule, DecisionExpired).Inc()
	}
	rec.Outcome = outcomePending
	rec.Detail = fmt.Sprintf("approval %s: %s; waiting until %s for `warden-remediator approve %s --namespace %s` (or deny)",
		id, next.Summary, next.ExpiresAt.UTC().Format(time.RFC3339), id, next.Namespace)
	if d.Target.Kind != "deployment" {
		// audit writes the Event of Deployment targets.
		r.approvalEvent(d, corev1.EventTypeNormal, "ApprovalRequested", rec.Detail)
	}
	return rec
}

// summary says in words what the decision would do.
func (d decision) summary() string {
	switch d.Rule.Action {
	case actions.BlockSource:
		return fmt.Sprintf("block-source %s for %s in ConfigMap %s/%s, then reload deployment %s",
			d.Request.Source, d.Request.BlockFor, d.Request.Namespace, d.Request.Blocklist, d.Request.Deployment)
	case actions.FlushCache:
		return "flush-cache on redis " + d.Target.Name
	}
	return fmt.Sprintf("%s deployment %s/%s", d.Rule.Action, d.Request.Namespace, d.Request.Deployment)
}

// approvalEvent writes an Event on the Deployment the decision acts on
// (for block-source: the gateway).
func (r *Remediator) approvalEvent(d decision, eventType, reason, msg string) {
	if d.Request.Deployment == "" {
		return
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	r.recorder.Event(deploymentRef(target{Kind: "deployment", Namespace: d.Request.Namespace, Name: d.Request.Deployment}), eventType, reason, msg)
}

// watchApprovals reads the approval records every approvals.poll_interval
// until ctx ends: it acts on approved ones, counts denials, expires
// proposals nobody decided, and removes expired blocklist entries.
func (r *Remediator) watchApprovals(ctx context.Context) {
	for {
		interval := r.Policy().Approvals.PollInterval
		if interval <= 0 {
			interval = DefaultApprovalsConfig.PollInterval
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		r.pollApprovals(ctx)
	}
}

// pollApprovals is one round of watchApprovals.
func (r *Remediator) pollApprovals(ctx context.Context) {
	snap := r.acquireSnapshot()
	defer snap.users.Done()
	p := snap.policy
	if !p.usesApproval() && !p.usesBlockSource() {
		r.approvals.pending.Set(0)
		return
	}
	pending := 0
	for _, ns := range p.namespaces() {
		leases, err := r.leases.openApprovals(ctx, ns)
		if err != nil {
			r.logger.Warn("cannot list approval records", "namespace", ns, "err", err)
			continue
		}
		for _, l := range leases {
			a, ok, err := decodeApproval(l)
			if err != nil || !ok {
				continue
			}
			switch a.State {
			case StatePending:
				if r.now().Before(a.ExpiresAt) {
					pending++
					continue
				}
				r.closeApproval(ctx, p, l, a, StatePending, DecisionExpired)
			case StateDenied:
				r.closeApproval(ctx, p, l, a, StateDenied, DecisionDenied)
			case StateApproved:
				r.executeApproval(ctx, snap, l, a)
			}
		}
	}
	r.approvals.pending.Set(float64(pending))
	r.sweepBlocklists(ctx, p)
}

// openApprovals returns the Leases of the approval records in the
// namespace that wait for a replica (pending, approved, denied), from the
// Lease cache once it has synced: the rounds of a quiet replica make no
// API call. A record the cache shows late is handled a round later; every
// transition is decided again on the API server's copy.
func (s *leaseStore) openApprovals(ctx context.Context, namespace string) ([]*coordinationv1.Lease, error) {
	leases, err := s.list(ctx, namespace)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(leases, func(l *coordinationv1.Lease) bool {
		switch l.Labels[labelApprovalState] {
		case StatePending, StateApproved, StateDenied:
			return false
		}
		return true
	}), nil
}

// closeApproval closes an expired or denied record; the replica whose
// write wins counts and audits the decision.
func (r *Remediator) closeApproval(ctx context.Context, p *Policy, l *coordinationv1.Lease, a Approval, from, decision string) {
	now := r.now()
	closed, wrote, err := transitionApproval(ctx, r.kube, l.Namespace, l.Name, a.ID, r.identity, func(c *Approval) (bool, error) {
		if c.State != from || (from == StatePending && now.Before(c.ExpiresAt)) {
			return false, nil
		}
		c.State, c.Decision = StateClosed, decision
		if decision == DecisionExpired {
			c.DecidedAt = now
			c.Detail = "nobody approved it in time"
		}
		return true, nil
	})
	if err != nil || !wrote {
		// Not found: a new proposal replaced the record in between.
		if err != nil && !errors.Is(err, ErrApprovalNotFound) {
			r.logger.Warn("cannot close approval record", "id", a.ID, "namespace", l.Namespace, "err", err)
		}
		return
	}
	r.approvals.total.WithLabelValues(closed.Rule, decision).Inc()
	msg := fmt.Sprintf("approval %s %s: %s (alert %s)", closed.ID, decision, closed.Summary, closed.Alert.Name)
	if decision == DecisionDenied {
		msg += " by " + closed.Approver
	}
	r.logger.Info("approval decided", "id", closed.ID, "decision", decision, "approver", closed.Approver,
		"rule", closed.Rule, "action", string(closed.Action), "namespace", closed.Namespace, "target", closed.Target, "alertname", closed.Alert.Name)
	if d, ok := r.approvalDecision(p, closed); ok {
		r.approvalEvent(d, corev1.EventTypeNormal, "Approval"+titleCase(decision), msg)
	}
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// approvalDecision re-evaluates the recorded alert under the policy in
// force, for the rule the proposal came from.
func (r *Remediator) approvalDecision(p *Policy, a Approval) (decision, bool) {
	i := slices.IndexFunc(p.Rules, func(rule Rule) bool { return rule.Name == a.Rule })
	if i < 0 {
		return decision{}, false
	}
	alert := a.amAlert()
	return p.ruleDecision(&p.Rules[i], &alert, r.dryRun), true
}

func (a *Approval) amAlert() amtemplate.Alert {
	return amtemplate.Alert{Status: "firing", Labels: a.Alert.Labels, Fingerprint: a.Alert.Fingerprint, StartsAt: a.Alert.StartsAt}
}

// executeApproval runs an approved action on the replica whose claim of
// the record wins; the target's own record then keeps the occurrence to
// one action, as for every other action.
func (r *Remediator) executeApproval(ctx context.Context, snap *snapshot, l *coordinationv1.Lease, a Approval) {
	holder := r.holderPrefix + rand.String(8)
	claimed, wrote, err := transitionApproval(ctx, r.kube, l.Namespace, l.Name, a.ID, r.identity, func(c *Approval) (bool, error) {
		if c.State != StateApproved {
			return false, nil
		}
		c.State, c.Holder = StateExecuting, holder
		return true, nil
	})
	if err != nil || !wrote {
		if err != nil {
			r.logger.Warn("cannot claim approved action", "id", a.ID, "namespace", l.Namespace, "err", err)
		}
		return
	}
	r.approvals.total.WithLabelValues(claimed.Rule, DecisionApproved).Inc()
	rec := r.actApproved(ctx, snap, claimed)
	rec.Detail = fmt.Sprintf("approved by %s (approval %s): %s", claimed.Approver, claimed.ID, rec.Detail)
	r.audit(ctx, rec)
	r.recent.add(r.now(), rec)
	if d, ok := r.approvalDecision(snap.policy, claimed); ok && rec.Target.Kind != "deployment" {
		// audit writes the Event of Deployment targets; the others get
		// theirs on the Deployment the action reloads.
		eventType, reason := corev1.EventTypeNormal, "Remediated"
		switch rec.Outcome {
		case outcomeFailed:
			eventType, reason = corev1.EventTypeWarning, "RemediationFailed"
		case outcomeSkipped:
			reason = "RemediationSkipped"
		}
		r.approvalEvent(d, eventType, reason, fmt.Sprintf("%s %s for alert %s: %s", rec.Outcome, rec.Action, rec.Alertname, rec.Detail))
	}
	_, _, err = transitionApproval(ctx, r.kube, l.Namespace, l.Name, a.ID, r.identity, func(c *Approval) (bool, error) {
		if c.State != StateExecuting || c.Holder != holder {
			return false, nil
		}
		c.State, c.Outcome, c.Detail = StateClosed, rec.Outcome, truncate(rec.Detail, 512)
		return true, nil
	})
	if err != nil {
		r.logger.Warn("cannot record the outcome of an approved action", "id", a.ID, "namespace", l.Namespace, "err", err)
	}
}

// actApproved re-evaluates the approved proposal under the policy in
// force and acts through the same gates and claim as any firing alert.
func (r *Remediator) actApproved(ctx context.Context, snap *snapshot, a Approval) record {
	alert := a.amAlert()
	d, ok := r.approvalDecision(snap.policy, a)
	if !ok {
		return newRecord(&alert, decision{}).skipped(ReasonNotAllowed, fmt.Sprintf("rule %q is no longer in the policy", a.Rule))
	}
	rec := newRecord(&alert, d)
	switch {
	case d.SkipReason != "":
		return rec.skipped(d.SkipReason, d.Detail)
	case d.Target.String() != a.Target || d.Target.Namespace != a.Namespace:
		return rec.skipped(ReasonNotAllowed, fmt.Sprintf("the policy now resolves the target to %s/%s, not the approved %s/%s", d.Target.Namespace, d.Target, a.Namespace, a.Target))
	}
	return r.gateClaimAct(ctx, snap, &alert, d, rec, true)
}

func (p *Policy) usesApproval() bool {
	return slices.ContainsFunc(p.Rules, func(r Rule) bool { return r.Approval == ApprovalRequired })
}

func (p *Policy) usesBlockSource() bool {
	return slices.ContainsFunc(p.Rules, func(r Rule) bool { return r.Action == actions.BlockSource })
}

// readState reads a target's record, waiting out an unreachable store for
// defaults.retry_for.
func (r *Remediator) readState(ctx context.Context, p *Policy, store stateStore, t target) (targetState, error) {
	var st targetState
	err := retryStore(ctx, p.Defaults.RetryFor, func() (err error) {
		st, err = store.read(ctx, t)
		return err
	}, r.retryLogger(t))
	return st, err
}
