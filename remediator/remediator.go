// Package remediator receives Alertmanager webhooks and turns firing alerts
// into Level-1 fixes, carried out by package actions, under a policy that
// decides what is allowed and safety checks that keep every alert occurrence
// to at most one action per target across deliveries, replicas and restarts.
package remediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	kuberecord "k8s.io/client-go/tools/record"

	"github.com/warden-sre/warden/remediator/actions"
)

// Options configure a Remediator.
type Options struct {
	// Kube is the client for Leases, the gates' reads (and whatever the
	// Executor uses). Required.
	Kube kubernetes.Interface
	// EventKube writes the Events (default Kube). A client of its own, with
	// its own request budget, keeps Events, which are written in the
	// background and best effort, from delaying claims in a storm, as
	// kube-scheduler does with its event client.
	EventKube kubernetes.Interface
	// Executor carries out actions. Required.
	Executor actions.Executor
	Logger   *slog.Logger
	// Registerer receives the remediator's metrics. Required.
	Registerer prometheus.Registerer
	// Identity names this replica in Leases and Events (pod name).
	Identity string
	// QueueSize bounds alerts accepted but not yet handled (default 10000).
	QueueSize int
	// Workers handle queued alerts concurrently (default 16).
	Workers int
	// DryRun forces dry-run for every rule.
	DryRun bool
	// Auth is checked on every webhook request.
	Auth Auth
	// MaxBodyBytes caps a webhook body (default 1 MiB).
	MaxBodyBytes int64
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Alertmanager and Prometheus tell which alerts fire now, for the stale
	// check, block_when and verification. Either may be nil.
	Alertmanager AlertReader
	Prometheus   AlertReader
	// CoordinationNamespace holds the Lease of the rate limit shared by all
	// replicas (the remediator's own namespace). Empty: each replica
	// limits itself.
	CoordinationNamespace string
}

// job is one alert of one accepted webhook payload.
type job struct {
	alert    amtemplate.Alert
	received time.Time
}

// snapshot is a policy with the clients it needs, replaced as a whole on
// reload. In-flight jobs keep the snapshot they started with.
type snapshot struct {
	policy *Policy
	redis  map[string]*redisStore
	users  snapshotUsers
}

// snapshotUsers counts the holders of a snapshot (acquireSnapshot); close
// waits until they are done.
type snapshotUsers struct {
	wg sync.WaitGroup
	n  atomic.Int64
}

func (u *snapshotUsers) Add(delta int) {
	u.n.Add(int64(delta))
	u.wg.Add(delta)
}

func (u *snapshotUsers) Done() {
	u.n.Add(-1)
	u.wg.Done()
}

func (u *snapshotUsers) Wait() { u.wg.Wait() }

// held is how many hold the snapshot now.
func (u *snapshotUsers) held() int64 { return u.n.Load() }

func (s *snapshot) close() {
	s.users.Wait()
	for _, r := range s.redis {
		_ = r.client.Close()
	}
}

// Remediator receives alerts, queues them and acts on them under the policy.
type Remediator struct {
	kube     kubernetes.Interface
	exec     actions.Executor
	logger   *slog.Logger
	metrics  *metrics
	identity string
	dryRun   bool
	now      func() time.Time
	maxBody  int64
	workers  int

	auth    atomic.Pointer[Auth]
	current atomic.Pointer[snapshot]
	swapMu  sync.RWMutex
	leases  *leaseStore
	// objects mirrors the namespaces and Deployments the policy may act
	// on, for the gates and verification.
	objects *targetCache
	limiter *rateLimiter
	// dryRunSeen keeps dry-run deliveries from being recorded over and over
	// (dry-run writes no coordination state).
	dryRunSeen *seenSet
	// resolvedSeen holds the occurrences (alertOccurrence) whose resolved
	// notification was received, so that a delayed firing job of the same
	// occurrence is dropped even before the store is reachable.
	resolvedSeen *seenSet
	events       kuberecord.EventBroadcaster
	recorder     kuberecord.EventRecorder
	skipEvents   *skipEvents
	// holderPrefix starts the holder of every claim of this process:
	// "<identity>/<process id>/".
	holderPrefix string
	// unauthorizedLog spaces the log lines about refused credentials.
	unauthorizedLog logThrottle
	// recent is this replica's last decisions, for the status page.
	recent decisionRing

	// Gates and verification (gates.go, verify.go).
	alertmanager  AlertReader
	prometheus    AlertReader
	namespaceWarn sync.Once
	pending       pendingVerifications
	verifying     sync.WaitGroup
	verifyMetrics *verifyMetrics
	shared        *sharedLimit // nil: per-replica rate limit

	// Approvals (approval.go): the metrics, and the credentials of the
	// approvals endpoint (nil: disabled).
	approvals      *approvalMetrics
	approvalTokens atomic.Pointer[ApprovalTokens]

	queueMu sync.Mutex
	queue   chan job
	// lastWait is how long the job a worker took last had waited in the
	// queue (nanoseconds): the queue's backlog as its jobs see it.
	lastWait atomic.Int64
	closed   bool
	started  atomic.Bool
	stopped  chan struct{}
}

// New creates a Remediator with the given policy. Call Run to start the
// workers.
func New(opts Options, p *Policy) (*Remediator, error) {
	if opts.Kube == nil || opts.Executor == nil || opts.Registerer == nil {
		return nil, errors.New("remediator: Kube, Executor and Registerer are required")
	}
	if p == nil {
		return nil, errors.New("remediator: policy is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 10000
	}
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Identity == "" {
		host, _ := os.Hostname()
		opts.Identity = host
	}
	r := &Remediator{
		kube:         opts.Kube,
		exec:         opts.Executor,
		logger:       opts.Logger,
		identity:     opts.Identity,
		dryRun:       opts.DryRun,
		now:          opts.Now,
		maxBody:      opts.MaxBodyBytes,
		workers:      opts.Workers,
		leases:       &leaseStore{kube: opts.Kube, identity: opts.Identity, cache: newLeaseCache(opts.Kube)},
		objects:      newTargetCache(opts.Kube),
		limiter:      newRateLimiter(p.RateLimit.ActionsPerHour),
		dryRunSeen:   newSeenSet(4096),
		resolvedSeen: newSeenSet(4096),
		queue:        make(chan job, opts.QueueSize),
		stopped:      make(chan struct{}),

		alertmanager: opts.Alertmanager,
		prometheus:   opts.Prometheus,
	}
	r.holderPrefix = r.identity + "/" + rand.String(6) + "/"
	if opts.EventKube == nil {
		opts.EventKube = opts.Kube
	}
	r.events, r.recorder = newEventRecorder(opts.EventKube, opts.Identity)
	r.skipEvents = newSkipEvents()
	auth := opts.Auth
	r.auth.Store(&auth)
	m, err := newMetrics(opts.Registerer, func() float64 { return float64(len(r.queue)) }, opts.Now)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	if r.verifyMetrics, err = newVerifyMetrics(opts.Registerer, m); err != nil {
		return nil, err
	}
	r.verifyMetrics.initRules(p)
	if r.approvals, err = newApprovalMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	r.approvals.initRules(p)
	if opts.CoordinationNamespace != "" {
		r.shared = &sharedLimit{kube: opts.Kube, namespace: opts.CoordinationNamespace, identity: opts.Identity}
	}
	r.current.Store(r.newSnapshot(p))
	return r, nil
}

func (r *Remediator) newSnapshot(p *Policy) *snapshot {
	s := &snapshot{policy: p, redis: map[string]*redisStore{}}
	for _, rt := range p.Redis {
		if !rt.Enabled {
			continue
		}
		s.redis[rt.Name] = &redisStore{client: redis.NewClient(redisOptions(rt))}
	}
	return s
}

// SetPolicy replaces the policy. Jobs already running finish under the old
// one; its Redis clients are closed once they are done.
func (r *Remediator) SetPolicy(p *Policy) {
	r.limiter.setLimit(p.RateLimit.ActionsPerHour)
	r.leases.cache.watch(p.namespaces())
	r.objects.watch(p.namespaces())
	r.verifyMetrics.initRules(p)
	r.approvals.initRules(p)
	next := r.newSnapshot(p)
	r.swapMu.Lock()
	old := r.current.Swap(next)
	r.swapMu.Unlock()
	go old.close()
}

// SetAuth replaces the webhook credentials (after a reload re-read them).
func (r *Remediator) SetAuth(a Auth) { r.auth.Store(&a) }

// Policy returns the policy in force.
func (r *Remediator) Policy() *Policy { return r.current.Load().policy }

// enqueue accepts all alerts of a payload or none: a partial accept would
// make Alertmanager retry alerts that were already queued (harmless, since
// dedupe is on the occurrence, but wasteful).
func (r *Remediator) enqueue(alerts []amtemplate.Alert, received time.Time) error {
	r.queueMu.Lock()
	defer r.queueMu.Unlock()
	if r.closed {
		return errShuttingDown
	}
	if cap(r.queue)-len(r.queue) < len(alerts) {
		return errQueueFull
	}
	// A 202 promises that the alerts will be decided while that still
	// means something: a job that waited longer than defaults.max_delay is
	// dropped as stale unless its alert is confirmed to fire. While the
	// jobs workers take have waited more than half of that, the queue
	// takes nothing more, and Alertmanager retries once it has drained.
	if wait, maxDelay := time.Duration(r.lastWait.Load()), r.Policy().Defaults.MaxDelay; maxDelay > 0 && len(r.queue) > 0 && wait > maxDelay/2 {
		return fmt.Errorf("%w: queued alerts wait %s before they are handled (defaults.max_delay %s)", errBacklogged, wait.Round(time.Second), maxDelay)
	}
	for _, a := range alerts {
		if a.Status == "resolved" {
			r.resolvedSeen.add(alertOccurrence(a.Fingerprint, a.StartsAt))
		}
		r.queue <- job{alert: a, received: received}
	}
	return nil
}

var (
	errShuttingDown = errors.New("shutting down")
	errQueueFull    = errors.New("queue full")
	errBacklogged   = errors.New("queue backlogged")
)

// Run starts the workers and blocks until ctx ends. Cancelling ctx aborts
// work in progress; use Shutdown first to drain the queue gracefully.
func (r *Remediator) Run(ctx context.Context) {
	if !r.started.CompareAndSwap(false, true) {
		return
	}
	r.leases.cache.start(ctx, r.Policy().namespaces())
	r.objects.start(ctx, r.Policy().namespaces())
	// The breaker gauge is derived from the stores, refreshed from start
	// until the workers are done.
	breakerCtx, stopBreakers := context.WithCancel(ctx)
	breakersDone := make(chan struct{})
	go func() {
		defer close(breakersDone)
		r.watchBreakers(breakerCtx, breakerRefreshInterval)
	}()
	// Approved actions and expiries are picked up from the approval
	// records, on whichever replica wins the write.
	approvalsDone := make(chan struct{})
	go func() {
		defer close(approvalsDone)
		r.watchApprovals(breakerCtx)
	}()
	var wg sync.WaitGroup
	for range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range r.queue {
				r.lastWait.Store(int64(r.now().Sub(j.received)))
				r.handle(ctx, j)
			}
		}()
	}
	wg.Wait()
	stopBreakers()
	<-breakersDone
	<-approvalsDone
	r.events.Shutdown()
	close(r.stopped)
	// Verifications end when ctx does.
	r.verifying.Wait()
}

// Shutdown stops accepting alerts (the webhook answers 503 so Alertmanager
// retries elsewhere or later) and waits until the queued alerts are handled
// or ctx ends. Alerts still queued then are logged as dropped; they were
// already acknowledged, so they come back only with Alertmanager's next
// repeat, and the occurrence key makes that delivery act at most once.
func (r *Remediator) Shutdown(ctx context.Context) error {
	r.queueMu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.queueMu.Unlock()
	if !r.started.Load() {
		return nil
	}
	select {
	case <-r.stopped:
		return nil
	case <-ctx.Done():
		dropped := len(r.queue)
		r.logger.Error("shutdown grace period over: queued alerts dropped", "dropped", dropped)
		return fmt.Errorf("shutdown: %d queued alerts not handled: %w", dropped, ctx.Err())
	}
}

// Ready reports whether the webhook accepts work.
func (r *Remediator) Ready() bool {
	r.queueMu.Lock()
	defer r.queueMu.Unlock()
	return !r.closed
}

// acquireSnapshot returns the policy snapshot in force, kept open until
// the caller calls its users.Done.
func (r *Remediator) acquireSnapshot() *snapshot {
	// The read lock keeps SetPolicy from retiring the snapshot between
	// Load and Add.
	r.swapMu.RLock()
	defer r.swapMu.RUnlock()
	snap := r.current.Load()
	snap.users.Add(1)
	return snap
}

// handle processes one alert: it evaluates the policy and, for each
// decision, coordinates and acts, then audits the decision. Every path
// through the handlers below returns its record, so each decision is
// audited here, once.
func (r *Remediator) handle(ctx context.Context, j job) {
	snap := r.acquireSnapshot()
	defer snap.users.Done()
	a := &j.alert
	stale := r.staleness(ctx, snap.policy, j)
	for _, d := range snap.policy.evaluate(a, r.dryRun) {
		rec := newRecord(a, d)
		switch {
		case a.Status == "resolved":
			rec = r.handleResolved(ctx, snap, d, rec)
		case d.SkipReason != "":
			rec = rec.skipped(d.SkipReason, d.Detail)
		case stale != "":
			rec = rec.skipped(ReasonStale, stale)
		default:
			rec = r.handleFiring(ctx, snap, a, d, rec)
		}
		r.audit(ctx, rec)
		r.recent.add(r.now(), rec)
	}
}

func (r *Remediator) storeFor(snap *snapshot, t target) (stateStore, error) {
	if t.Kind != "redis" {
		return r.leases, nil
	}
	s, ok := snap.redis[t.Name]
	if !ok {
		return nil, fmt.Errorf("redis target %q has no coordination client", t.Name)
	}
	return s, nil
}

// handleResolved closes out the record of the latest action for the alert
// on the target. A resolved alert never triggers an action.
func (r *Remediator) handleResolved(ctx context.Context, snap *snapshot, d decision, rec record) record {
	r.pending.resolved(rec.Fingerprint)
	rec.Outcome = outcomeResolved
	switch d.SkipReason {
	case ReasonNoMatchingRule, ReasonNotAllowed, ReasonInvalidTarget:
		// Nothing was ever done for an alert the policy refuses.
		return rec.skipped(d.SkipReason, d.Detail)
	}
	store, err := r.storeFor(snap, d.Target)
	if err != nil || d.DryRun {
		return rec
	}
	changed, early := false, false
	occ := occurrence{Key: occurrenceKey(rec.Fingerprint, rec.StartsAt, string(d.Rule.Action)), Fingerprint: rec.Fingerprint}
	err = retryStore(ctx, snap.policy.Defaults.RetryFor, func() error {
		return store.update(ctx, d.Target, func(st *targetState) bool {
			changed, early = resolveOccurrence(st, occ, r.now())
			return changed
		})
	}, r.retryLogger(d.Target))
	switch {
	case err != nil:
		rec.Detail = "could not record resolution: " + err.Error()
	case early:
		// Nothing was done on the target, so no Event; the record makes a
		// delayed firing delivery of this occurrence drop.
		rec.Detail = "resolved before any action; a delayed firing delivery will not act"
		rec.Reason = ReasonDuplicate
	case changed:
		rec.Detail = "closed out the earlier action"
	default:
		// Every Alertmanager notification repeats resolved alerts; only
		// the first one changes anything, the rest need no Event.
		rec.Detail = "no open action for this alert"
		rec.Reason = ReasonDuplicate
	}
	return rec
}

func (r *Remediator) retryLogger(t target) func(error, time.Duration) {
	return func(err error, wait time.Duration) {
		r.logger.Warn("coordination store unavailable, retrying", "target", t.String(), "namespace", t.Namespace, "wait", wait, "err", err)
	}
}

// handleFiring decides on a firing alert whose target the policy allows:
// claim the occurrence in the target's state record, act, record the
// outcome.
func (r *Remediator) handleFiring(ctx context.Context, snap *snapshot, a *amtemplate.Alert, d decision, rec record) record {
	return r.gateClaimAct(ctx, snap, a, d, rec, false)
}

// gateClaimAct takes a firing decision through the gates, then claims the
// occurrence in the target's state record, acts, records the outcome and
// schedules the verification; a dry run reads the record but claims
// nothing. A decision whose rule needs approval is proposed instead,
// unless approved says it is an approved proposal being carried out. An
// approved action is not refused from the Lease cache: a refusal closes
// its approval for good, so it is decided on the API server's record.
func (r *Remediator) gateClaimAct(ctx context.Context, snap *snapshot, a *amtemplate.Alert, d decision, rec record, approved bool) record {
	store, err := r.storeFor(snap, d.Target)
	if err != nil {
		return rec.skipped(ReasonUnavailable, err.Error())
	}
	in := firingClaim(a, d, snap.policy.Breaker)
	reason, detail, cached := r.gate(ctx, snap.policy, store, d)
	if reason != "" {
		return rec.skipped(reason, detail)
	}
	// Refusals that need no write are decided from the Lease cache: a
	// storm of deliveries for targets in cooldown costs no API call.
	if !approved {
		if v, ok := r.refusedFromCache(store, a, d.Target, in); ok {
			return rec.skipped(v.Reason, v.Detail)
		}
	}
	if cached {
		if reason, detail := r.confirmGates(ctx, snap.policy, store, d.Target); reason != "" {
			return rec.skipped(reason, detail)
		}
	}
	if d.DryRun {
		return r.dryRunFiring(ctx, snap.policy, store, d, in, rec)
	}
	if d.NeedsApproval && !approved {
		return r.propose(ctx, snap, a, d, rec)
	}
	rec = r.claimAndAct(ctx, snap.policy, store, a, d, in, rec)
	r.verifyLater(ctx, snap, store, a, d, in.Occ.Key, rec)
	return rec
}

// firingClaim is the claim of a firing alert's occurrence for the
// decision's action (the simulation makes the same).
func firingClaim(a *amtemplate.Alert, d decision, b BreakerConfig) claimInput {
	return claimInput{
		Occ: occurrence{
			Key:         occurrenceKey(a.Fingerprint, a.StartsAt, string(d.Rule.Action)),
			Fingerprint: a.Fingerprint,
			Pod:         d.Request.Pod,
		},
		Recycle:  d.Rule.Action == actions.Recycle,
		Cooldown: d.Cooldown,
		Breaker:  b,
		RateOK:   true,
	}
}

// dryRunFiring reads the coordination state but never writes it, so a
// later real run is not held back by a cooldown that did nothing. Repeated
// deliveries are recognised in process memory instead.
func (r *Remediator) dryRunFiring(ctx context.Context, p *Policy, store stateStore, d decision, in claimInput, rec record) record {
	seen := in.Occ.Key + "|" + d.Target.Namespace + "/" + d.Target.String()
	if !r.dryRunSeen.add(seen) {
		return rec.skipped(ReasonDuplicate, "")
	}
	st, err := r.readState(ctx, p, store, d.Target)
	if err != nil {
		r.dryRunSeen.remove(seen)
		return rec.skipped(unavailableReason(ctx), err.Error())
	}
	in.Now = r.now()
	v := claim(&st, in)
	if !v.Proceed {
		return rec.skipped(v.Reason, v.Detail)
	}
	req := d.Request
	req.RecentlyRecycled = v.RecentlyRecycled
	return r.execute(ctx, req, rec)
}

// claimAndAct writes the claim conditionally; only the replica whose write
// succeeds runs the action, and then stores its outcome.
func (r *Remediator) claimAndAct(ctx context.Context, p *Policy, store stateStore, a *amtemplate.Alert, d decision, in claimInput, rec record) record {
	start := r.now()
	in.Occ.Holder = r.holderPrefix + rand.String(8)
	rateOK, cancelRate, rateDetail, rerr := r.reserveRate(ctx, p, store, d, in)
	if rerr != nil {
		rec = rec.skipped(unavailableReason(ctx), rerr.Error())
		rec.Duration = r.now().Sub(start)
		return rec
	}
	in.RateOK = rateOK
	var v verdict
	var openUntil time.Time
	err := retryStore(ctx, p.Defaults.RetryFor, func() error {
		return store.update(ctx, d.Target, func(st *targetState) bool {
			in.Now = r.now()
			defer func() { openUntil = st.BreakerOpenUntil }()
			v = r.decideClaim(st, a, in)
			return v.Write
		})
	}, r.retryLogger(d.Target))
	if err != nil {
		cancelRate()
		r.logger.Error("alert not handled: coordination store unreachable; Alertmanager's next repeat of this alert will be handled (at most once)",
			"alertname", rec.Alertname, "fingerprint", rec.Fingerprint, "target", d.Target.String(), "err", err)
		rec = rec.skipped(unavailableReason(ctx), err.Error())
		rec.Duration = r.now().Sub(start)
		return rec
	}
	r.metrics.breakerOpen.set(d.Target, openUntil)
	if v.Opened {
		r.escalate(ctx, d.Target, rec.Alertname, v.Detail)
	}
	if !v.Proceed {
		cancelRate()
		rec = rec.skipped(v.Reason, v.Detail)
		if v.Reason == ReasonRateLimited && rateDetail != "" {
			rec.Detail = rateDetail
		}
		rec.Duration = r.now().Sub(start)
		return rec
	}
	req := d.Request
	req.RecentlyRecycled = v.RecentlyRecycled
	rec = r.execute(ctx, req, rec)
	r.recordOutcome(ctx, p, store, d.Target, in.Occ.Key, rec)
	return rec
}

// decideClaim is claim, preceded by the alert's resolution: a delivery of
// an occurrence that already acted is a duplicate, resolved or not; the
// resolution wins only over an occurrence that has not acted yet.
func (r *Remediator) decideClaim(st *targetState, a *amtemplate.Alert, in claimInput) verdict {
	if resolvedEarly(st, in.Occ.Key) || (r.resolvedSeen.has(alertOccurrence(a.Fingerprint, a.StartsAt)) && !recorded(st, in.Occ.Key)) {
		return verdict{Reason: ReasonResolvedBeforeAction, Detail: "the alert's resolved notification arrived before this firing delivery could act", BreakerOpen: in.Now.Before(st.BreakerOpenUntil)}
	}
	return claim(st, in)
}

// refusedFromCache decides a firing delivery on the cached Lease of its
// target, without writing: it answers (ok) only when the claim would be
// refused without changing the record (duplicate, cooldown, breaker open,
// resolved before action), and only once the Lease informer has synced.
// Everything else goes to claimAndAct, which decides again on the record it
// writes.
func (r *Remediator) refusedFromCache(store stateStore, a *amtemplate.Alert, t target, in claimInput) (verdict, bool) {
	if store != stateStore(r.leases) {
		return verdict{}, false
	}
	l, ok := r.leases.cache.get(t.Namespace, leaseName(t))
	if !ok {
		return verdict{}, false
	}
	var st targetState
	if l != nil {
		var err error
		if st, err = decodeState(l.Annotations); err != nil {
			return verdict{}, false // the claim reports it
		}
	}
	in.Now = r.now()
	v := r.decideClaim(&st, a, in)
	if v.Proceed || v.Write {
		return verdict{}, false
	}
	r.metrics.breakerOpen.set(t, st.BreakerOpenUntil)
	return v, true
}

// recordOutcome stores the outcome of a claimed action (failures, breaker)
// and escalates when this failure opened the breaker.
func (r *Remediator) recordOutcome(ctx context.Context, p *Policy, store stateStore, t target, key string, rec record) {
	outcome := rec.Outcome
	if outcome == outcomeSkipped {
		// Opt-out and the blast-radius cap are refusals, not failures of
		// the fix; they do not count towards the breaker.
		outcome = rec.Reason
	}
	var opened bool
	var openUntil time.Time
	err := retryStore(ctx, p.Defaults.RetryFor, func() error {
		return store.update(ctx, t, func(st *targetState) bool {
			opened = finish(st, key, outcome, r.now(), p.Breaker)
			openUntil = st.BreakerOpenUntil
			return true
		})
	}, r.retryLogger(t))
	if err != nil {
		r.logger.Error("cannot record action outcome", "target", t.String(), "namespace", t.Namespace, "outcome", outcome, "err", err)
		return
	}
	r.metrics.breakerOpen.set(t, openUntil)
	if opened {
		r.escalate(ctx, t, rec.Alertname, fmt.Sprintf("%d failed actions within %s", p.Breaker.Failures, p.Breaker.Window))
	}
}

// execute runs the action and returns the record with its outcome.
func (r *Remediator) execute(ctx context.Context, req actions.Request, rec record) record {
	actx, cancel := context.WithTimeout(ctx, req.Timeout)
	t0 := r.now()
	res, err := r.exec.Run(actx, req)
	cancel()
	rec.Duration = r.now().Sub(t0)
	rec.Executed = true
	rec.Object = res.Object
	switch {
	case errors.Is(err, actions.ErrOptedOut):
		rec.Outcome, rec.Reason, rec.Detail = outcomeSkipped, ReasonOptedOut, err.Error()
		rec.Executed = false
	case errors.Is(err, actions.ErrBlastRadius):
		// A refusal by the policy's cap, not a failure of the fix.
		rec.Outcome, rec.Reason, rec.Detail = outcomeSkipped, ReasonBlastRadius, err.Error()
		rec.Executed = false
	case err != nil:
		rec.Outcome, rec.Reason, rec.Detail = outcomeFailed, actions.Reason(err), err.Error()
	case req.DryRun:
		rec.Outcome, rec.Detail = outcomeDryRun, res.Detail
	default:
		rec.Outcome, rec.Detail = outcomeActed, res.Detail
		if !res.Verified {
			rec.Detail = "not verified: " + res.Detail
		}
	}
	return rec
}

func unavailableReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return ReasonShutdown
	}
	return ReasonUnavailable
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// seenSet is a bounded set of strings with FIFO eviction.
type seenSet struct {
	mu    sync.Mutex
	max   int
	set   map[string]struct{}
	order []string
}

func newSeenSet(n int) *seenSet {
	return &seenSet{max: n, set: make(map[string]struct{}, n)}
}

// add returns false when s was already present.
func (s *seenSet) add(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[k]; ok {
		return false
	}
	s.set[k] = struct{}{}
	s.order = append(s.order, k)
	if len(s.order) > s.max {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

func (s *seenSet) remove(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.set, k)
}
