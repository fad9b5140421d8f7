package remediator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/remediator/actions"
)

// Skip reasons of the gates: situations in which a person would not act
// either. They belong to the closed set of skip reasons.
const (
	ReasonStale             = "stale"
	ReasonRolloutInProgress = "rollout_in_progress"
	ReasonRecentRollout     = "recent_rollout"
	ReasonFrozen            = "frozen"
	ReasonBlockedByAlert    = "blocked_by_alert"
)

var gateReasons = []string{
	ReasonStale, ReasonRolloutInProgress, ReasonRecentRollout, ReasonFrozen,
	ReasonBlockedByAlert,
}

// Annotations a person sets on a namespace or a Deployment to stop
// automatic actions until a time.
const (
	FreezeUntilAnnotation  = "warden.io/freeze-until"
	FreezeReasonAnnotation = "warden.io/freeze-reason"
)

// GatesConfig tunes the checks made before every action.
type GatesConfig struct {
	// RecentRollout: a rollout someone else started within this period
	// refuses actions on the Deployment (a restart would hide a bad
	// rollout; rolling back is Level 2). 0 checks only rollouts in
	// progress.
	RecentRollout time.Duration `yaml:"recent_rollout"`
	// EventInterval: repeated skips of one target for one reason (gates,
	// cooldown, rate limit, breaker) get at
	// most one Event per interval; the log line and counter record each.
	EventInterval time.Duration `yaml:"event_interval"`
}

// DefaultGatesConfig holds the gates' defaults.
var DefaultGatesConfig = GatesConfig{RecentRollout: 10 * time.Minute, EventInterval: 10 * time.Minute}

// Freeze is a period without automatic actions: either absolute (From,
// To) or recurring (Days, Start, End in TimeZone).
type Freeze struct {
	Reason   string    `yaml:"reason"`
	From     time.Time `yaml:"from"`
	To       time.Time `yaml:"to"`
	TimeZone string    `yaml:"time_zone"`
	// Days are mon … sun; empty means every day. A window whose End is not
	// after Start runs past midnight into the next day.
	Days  []string `yaml:"days"`
	Start string   `yaml:"start"` // HH:MM
	End   string   `yaml:"end"`   // HH:MM

	loc        *time.Location
	days       []time.Weekday
	start, end int // minutes after midnight
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func (p *Policy) validateGates() error {
	if p.Defaults.MaxDelay < 0 {
		return fmt.Errorf("defaults.max_delay: must not be negative")
	}
	if p.Gates.RecentRollout < 0 {
		return fmt.Errorf("gates.recent_rollout: must not be negative")
	}
	if p.Gates.EventInterval < 0 {
		return fmt.Errorf("gates.event_interval: must not be negative")
	}
	if p.RateLimit.MaxTargetsPerNamespace < 0 {
		return fmt.Errorf("rate_limit.max_targets_per_namespace: must not be negative (0 means no limit)")
	}
	if err := p.Verify.validate(); err != nil {
		return err
	}
	for i := range p.Freezes {
		if err := p.Freezes[i].compile(fmt.Sprintf("freezes[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// describe says when the freeze applies, for people.
func (f *Freeze) describe() string {
	if !f.From.IsZero() || !f.To.IsZero() {
		return f.From.UTC().Format(time.RFC3339) + " to " + f.To.UTC().Format(time.RFC3339)
	}
	days := "every day"
	if len(f.Days) > 0 {
		days = strings.Join(f.Days, ", ")
	}
	tz := f.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return fmt.Sprintf("%s %s-%s %s", days, f.Start, f.End, tz)
}

func (f *Freeze) compile(path string) error {
	if strings.TrimSpace(f.Reason) == "" {
		return fmt.Errorf("%s.reason: required", path)
	}
	absolute := !f.From.IsZero() || !f.To.IsZero()
	recurring := f.Start != "" || f.End != "" || f.TimeZone != "" || len(f.Days) > 0
	switch {
	case absolute && recurring:
		return fmt.Errorf("%s: set either from/to or start/end (with time_zone, days), not both", path)
	case absolute:
		if f.From.IsZero() || f.To.IsZero() || !f.To.After(f.From) {
			return fmt.Errorf("%s: from and to are required and to must be after from", path)
		}
		return nil
	case !recurring:
		return fmt.Errorf("%s: set from/to or start/end", path)
	}
	var err error
	tz := f.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	if f.loc, err = time.LoadLocation(tz); err != nil {
		return fmt.Errorf("%s.time_zone: %w", path, err)
	}
	if f.start, err = clockMinutes(f.Start); err != nil {
		return fmt.Errorf("%s.start: %w", path, err)
	}
	if f.end, err = clockMinutes(f.End); err != nil {
		return fmt.Errorf("%s.end: %w", path, err)
	}
	f.days = nil
	for j, d := range f.Days {
		wd, ok := weekdays[strings.ToLower(d)]
		if !ok {
			return fmt.Errorf("%s.days[%d]: %q is not one of mon, tue, wed, thu, fri, sat, sun", path, j, d)
		}
		f.days = append(f.days, wd)
	}
	return nil
}

func clockMinutes(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("want HH:MM, got %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// active reports whether the freeze covers now.
func (f *Freeze) active(now time.Time) bool {
	if !f.From.IsZero() {
		return !now.Before(f.From) && now.Before(f.To)
	}
	t := now.In(f.loc)
	minute := t.Hour()*60 + t.Minute()
	onDay := func(d time.Weekday) bool { return len(f.days) == 0 || slices.Contains(f.days, d) }
	if f.start < f.end {
		return onDay(t.Weekday()) && minute >= f.start && minute < f.end
	}
	// Past midnight: the part before midnight belongs to today's window,
	// the part after to yesterday's.
	yesterday := (t.Weekday() + 6) % 7
	return (onDay(t.Weekday()) && minute >= f.start) || (onDay(yesterday) && minute < f.end)
}

// compileBlockWhen parses a rule's block_when matcher sets.
func compileBlockWhen(parse compat.ParseMatcher, sets [][]string, path string) ([]labels.Matchers, error) {
	var out []labels.Matchers
	for i, set := range sets {
		if len(set) == 0 {
			return nil, fmt.Errorf("%s.block_when[%d]: at least one matcher is required", path, i)
		}
		var all labels.Matchers
		for j, m := range set {
			pm, err := parse(m, path)
			if err != nil {
				return nil, fmt.Errorf("%s.block_when[%d][%d]: %w", path, i, j, err)
			}
			all = append(all, pm)
		}
		out = append(out, all)
	}
	return out, nil
}

// gate checks, before the claim, whether a person would act now: no freeze
// (policy, namespace or target annotation), no rollout by someone else in
// progress or just finished, no blocking alert firing. It returns the
// skip reason and detail, or "" to go on. The namespace and the Deployment
// come from the informers' cache where it has synced (cached); a decision
// to act confirms them against the API server (confirmGates) before it
// claims.
func (r *Remediator) gate(ctx context.Context, p *Policy, store stateStore, d decision) (reason, detail string, cached bool) {
	now := r.now()
	for _, f := range p.Freezes {
		if f.active(now) {
			return ReasonFrozen, "policy freeze: " + f.Reason, false
		}
	}
	if d.Target.Kind == "deployment" {
		if reason, detail, cached = r.kubeGates(ctx, p, store, d.Target, now, true); reason != "" {
			return reason, detail, cached
		}
	}
	reason, detail = r.blockingAlert(ctx, d.Rule)
	return reason, detail, cached
}

// confirmGates re-reads the namespace and the Deployment from the API
// server, for a decision to act whose gates were passed on cached copies:
// a rollout started or a freeze set a moment ago is seen before the claim.
func (r *Remediator) confirmGates(ctx context.Context, p *Policy, store stateStore, t target) (string, string) {
	reason, detail, _ := r.kubeGates(ctx, p, store, t, r.now(), false)
	return reason, detail
}

// kubeGates checks the namespace and the Deployment: freeze annotations
// and rollout state. With fromCache they are read from the informers where
// those have synced; cached reports whether either was.
func (r *Remediator) kubeGates(ctx context.Context, p *Policy, store stateStore, t target, now time.Time, fromCache bool) (reason, detail string, cached bool) {
	ns, nsCached, err := r.readNamespace(ctx, p, t, fromCache)
	switch {
	case err == nil:
		if ns == nil {
			break // not found: the action reports it
		}
		if until, why, frozen := freezeAnnotation(ns.Annotations, now); frozen {
			return ReasonFrozen, fmt.Sprintf("namespace %s frozen until %s: %s", t.Namespace, until, why), nsCached
		}
	case apierrors.IsForbidden(err):
		// Reading namespaces needs a ClusterRole the shipped RBAC does not
		// grant; freezes on the Deployment and in the policy still apply.
		r.namespaceWarn.Do(func() {
			r.logger.Warn("cannot read namespaces (no get permission on namespaces): freeze annotations on namespaces are ignored; those on Deployments and policy freezes apply", "err", err)
		})
	default:
		return unavailableReason(ctx), fmt.Sprintf("cannot read namespace %s for freeze annotations: %v", t.Namespace, err), nsCached
	}
	dep, depCached, err := r.readDeployment(ctx, p, t, fromCache)
	cached = nsCached || depCached
	if err != nil {
		return unavailableReason(ctx), fmt.Sprintf("cannot read deployment %s/%s for the rollout check: %v", t.Namespace, t.Name, err), cached
	}
	if dep == nil {
		return "", "", cached // not found: the action reports it
	}
	if until, why, frozen := freezeAnnotation(dep.Annotations, now); frozen {
		return ReasonFrozen, fmt.Sprintf("deployment %s frozen until %s: %s", t.Name, until, why), cached
	}
	st, err := r.readState(ctx, p, store, t)
	if err != nil {
		return unavailableReason(ctx), err.Error(), cached
	}
	reason, detail = rolloutGate(dep, now, p.Gates.RecentRollout, st.lastActionAt())
	return reason, detail, cached
}

// lastActionAt is the time of the target's latest action or claim.
func (st *targetState) lastActionAt() time.Time {
	last := st.LastActionAt
	for _, o := range st.Occurrences {
		if o.At.After(last) {
			last = o.At
		}
	}
	return last
}

// readNamespace returns the target's namespace (nil: not found), from the
// informer when fromCache and it has synced, else from the API server,
// waiting out an unreachable one for defaults.retry_for like the claim.
// Once listing namespaces was refused, and until the informer syncs after
// all, it does not ask again and returns a Forbidden error.
func (r *Remediator) readNamespace(ctx context.Context, p *Policy, t target, fromCache bool) (*corev1.Namespace, bool, error) {
	ns, synced := r.objects.namespace(t.Namespace)
	switch {
	case synced && fromCache:
		return ns, true, nil
	case !synced && r.objects.namespacesForbidden.Load():
		return nil, false, apierrors.NewForbidden(corev1.Resource("namespaces"), t.Namespace, errors.New("listing namespaces was refused"))
	}
	ns, err := getObject(ctx, p, r.retryLogger(t), func(ctx context.Context) (*corev1.Namespace, error) {
		return r.kube.CoreV1().Namespaces().Get(ctx, t.Namespace, metav1.GetOptions{})
	})
	if apierrors.IsForbidden(err) {
		r.objects.namespacesForbidden.Store(true)
	}
	return ns, false, err
}

// readDeployment returns the target Deployment (nil: not found), from the
// informer when fromCache and it has synced, else from the API server.
func (r *Remediator) readDeployment(ctx context.Context, p *Policy, t target, fromCache bool) (*appsv1.Deployment, bool, error) {
	if fromCache {
		if d, ok := r.objects.deployment(t.Namespace, t.Name); ok {
			return d, true, nil
		}
	}
	d, err := getObject(ctx, p, r.retryLogger(t), func(ctx context.Context) (*appsv1.Deployment, error) {
		return r.kube.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	})
	return d, false, err
}

// getObject reads an object from the API server, retrying an unreachable
// one for defaults.retry_for. Not found is an answer (nil, nil), not an
// outage.
func getObject[T any](ctx context.Context, p *Policy, onRetry func(error, time.Duration), get func(context.Context) (*T, error)) (*T, error) {
	var obj *T
	err := retryStore(ctx, p.Defaults.RetryFor, func() (err error) {
		obj, err = get(ctx)
		if apierrors.IsNotFound(err) {
			return backoff.Permanent(err)
		}
		return err
	}, onRetry)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return obj, err
}

// freezeAnnotation reads warden.io/freeze-until. A value that is not
// RFC 3339 still freezes: someone meant to stop automation, and acting
// against that because of a typo would be worse than waiting.
func freezeAnnotation(a map[string]string, now time.Time) (until, reason string, frozen bool) {
	v, ok := a[FreezeUntilAnnotation]
	if !ok || strings.TrimSpace(v) == "" {
		return "", "", false
	}
	reason = a[FreezeReasonAnnotation]
	if reason == "" {
		reason = "no reason given"
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	if err != nil {
		return truncate(v, 40), reason + " (" + FreezeUntilAnnotation + " is not RFC 3339; treated as frozen)", true
	}
	if !now.Before(t) {
		return "", "", false
	}
	return t.UTC().Format(time.RFC3339), reason, true
}

// rolloutGate refuses while a rollout someone else started is in progress
// or finished less than recent ago. The remediator's own restart or scale
// also starts one; whether that helped is verification's and the breaker's
// business, not this gate's.
func rolloutGate(d *appsv1.Deployment, now time.Time, recent time.Duration, lastAction time.Time) (string, string) {
	if ownRollout(d, lastAction) {
		return "", ""
	}
	if d.Generation != d.Status.ObservedGeneration {
		return ReasonRolloutInProgress, fmt.Sprintf("deployment %s: generation %d not yet observed (observed %d)", d.Name, d.Generation, d.Status.ObservedGeneration)
	}
	if st := rolloutState(d); !st.complete {
		return ReasonRolloutInProgress, fmt.Sprintf("deployment %s: %s", d.Name, st.detail)
	}
	// A Deployment unchanged since it was created (generation 1) has no
	// earlier version to roll back to: only a rollout in progress counts.
	if recent <= 0 || d.Generation <= 1 {
		return "", ""
	}
	if last := lastRollout(d); !last.IsZero() && now.Sub(last) < recent {
		return ReasonRecentRollout, fmt.Sprintf("deployment %s: rollout progressed %s ago (gates.recent_rollout %s)", d.Name, now.Sub(last).Round(time.Second), recent)
	}
	return "", ""
}

// ownRollout reports whether the latest change to the Deployment's spec
// was the remediator's (its restart patch or its scale): its last action on
// the target, from the coordination record, or its newest managedFields
// entry, is not older than any other manager's entry outside status.
// managedFields times have one-second resolution, and the scale
// subresource's entry has none, hence the record.
func ownRollout(d *appsv1.Deployment, lastAction time.Time) bool {
	ours, others := lastAction, time.Time{}
	for _, e := range d.ManagedFields {
		if e.Subresource == "status" || e.Time == nil {
			continue
		}
		if e.Manager == actions.FieldManager {
			if e.Time.After(ours) {
				ours = e.Time.Time
			}
		} else if e.Time.After(others) {
			others = e.Time.Time
		}
	}
	return !ours.IsZero() && !ours.Before(others)
}

// lastRollout is when the Deployment's rollout last progressed: the
// deployment controller moves the Progressing condition's lastUpdateTime
// when a new ReplicaSet is created, scaled up, and becomes available.
func lastRollout(d *appsv1.Deployment) time.Time {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			return c.LastUpdateTime.Time
		}
	}
	return time.Time{}
}

// rollout is a Deployment's rollout status as kubectl rollout status reads
// it.
type rollout struct {
	complete bool
	failed   bool
	detail   string
}

func rolloutState(d *appsv1.Deployment) rollout {
	r := actions.RolloutStatus(d)
	s := d.Status
	switch r.Stage {
	case actions.RolloutFailed:
		return rollout{failed: true, detail: "rollout failed: ProgressDeadlineExceeded: " + r.Message}
	case actions.RolloutNotObserved:
		return rollout{detail: fmt.Sprintf("generation %d not yet observed (observed %d)", d.Generation, s.ObservedGeneration)}
	case actions.RolloutUpdating:
		return rollout{detail: fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, r.Desired)}
	case actions.RolloutTerminating:
		return rollout{detail: fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)}
	case actions.RolloutBecomingAvailable:
		return rollout{detail: fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, r.Desired)}
	}
	return rollout{complete: true, detail: fmt.Sprintf("rollout complete: %d replicas updated and available", r.Desired)}
}

// blockingAlert refuses while an alert matching one of the rule's
// block_when sets fires. When the alerts cannot be read it refuses too: the
// rule's author said the action is wrong while those alerts fire, and it
// cannot be told that they do not.
func (r *Remediator) blockingAlert(ctx context.Context, rule *Rule) (string, string) {
	if rule == nil || len(rule.compiled.blockWhen) == 0 {
		return "", ""
	}
	rd := r.gateReader()
	if rd == nil {
		return ReasonBlockedByAlert, "cannot check block_when: " + errNoAlertSource.Error()
	}
	for _, ms := range rule.compiled.blockWhen {
		firing, err := rd.Firing(ctx, ms)
		if err != nil {
			return ReasonBlockedByAlert, fmt.Sprintf("cannot check block_when %s: %v", ms, err)
		}
		if len(firing) > 0 {
			names := make([]string, 0, len(firing))
			for _, f := range firing {
				if !slices.Contains(names, f["alertname"]) {
					names = append(names, f["alertname"])
				}
			}
			slices.Sort(names)
			return ReasonBlockedByAlert, fmt.Sprintf("%s firing (block_when %s, read from %s)", strings.Join(names, ", "), ms, rd)
		}
	}
	return "", ""
}
