package remediator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Annotations on the coordination Lease (and fields of the Redis hash) that
// hold a target's remediation state.
const (
	annoTarget           = "warden.io/target"
	annoLastOccurrence   = "warden.io/last-occurrence"
	annoLastActionTime   = "warden.io/last-action-time"
	annoLastOutcome      = "warden.io/last-outcome"
	annoFailures         = "warden.io/failures"
	annoRefires          = "warden.io/refires"
	annoWindowStart      = "warden.io/window-start"
	annoBreakerOpenUntil = "warden.io/breaker-open-until"
	annoOccurrences      = "warden.io/occurrences"

	fieldManager = "warden-remediator"
	// maxOccurrences bounds the remembered occurrence keys per target. A
	// delivery of an occurrence older than the last maxOccurrences actions
	// on the target falls back to the cooldown check.
	maxOccurrences = 32
	// maxUpdateAttempts bounds optimistic-concurrency retries of one
	// decision; every conflict means another writer made progress.
	maxUpdateAttempts = 50
)

var stateAnnotations = []string{
	annoTarget, annoLastOccurrence, annoLastActionTime, annoLastOutcome, annoFailures,
	annoRefires, annoWindowStart, annoBreakerOpenUntil, annoOccurrences,
}

// occurrence identifies one firing of one alert for one action: Alertmanager
// repeats, retries and HA peers all carry the same fingerprint and startsAt.
type occurrence struct {
	Key         string `json:"key"`
	Fingerprint string `json:"fp"`
	Pod         string `json:"pod,omitempty"`
	// At is when the action was claimed.
	At       time.Time `json:"at"`
	Resolved bool      `json:"resolved,omitempty"`
	Outcome  string    `json:"outcome,omitempty"`
}

func occurrenceKey(fingerprint string, startsAt time.Time, action string) string {
	return fingerprint + "@" + startsAt.UTC().Format(time.RFC3339Nano) + "/" + action
}

// targetState is what the coordination store remembers about one target.
type targetState struct {
	Occurrences      []occurrence
	LastActionAt     time.Time
	LastOutcome      string
	Failures         int
	Refires          int
	WindowStart      time.Time
	BreakerOpenUntil time.Time
}

func (s *targetState) encode(t target) map[string]string {
	m := map[string]string{
		annoTarget:      t.String(),
		annoFailures:    strconv.Itoa(s.Failures),
		annoRefires:     strconv.Itoa(s.Refires),
		annoLastOutcome: s.LastOutcome,
	}
	setTime := func(k string, v time.Time) {
		if !v.IsZero() {
			m[k] = v.UTC().Format(time.RFC3339Nano)
		}
	}
	setTime(annoLastActionTime, s.LastActionAt)
	setTime(annoWindowStart, s.WindowStart)
	setTime(annoBreakerOpenUntil, s.BreakerOpenUntil)
	if n := len(s.Occurrences); n > 0 {
		m[annoLastOccurrence] = s.Occurrences[n-1].Key
		b, _ := json.Marshal(s.Occurrences) // plain struct, cannot fail
		m[annoOccurrences] = string(b)
	}
	return m
}

// decodeState reads state written by encode. Malformed fields (someone
// edited the Lease by hand) are reported; the caller refuses to act on a
// target whose history it cannot read.
func decodeState(m map[string]string) (targetState, error) {
	var s targetState
	var errs []error
	getTime := func(k string) time.Time {
		v, ok := m[k]
		if !ok || v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		return t
	}
	getInt := func(k string) int {
		v, ok := m[k]
		if !ok || v == "" {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s: not a count: %q", k, v))
		}
		return n
	}
	s.LastActionAt = getTime(annoLastActionTime)
	s.WindowStart = getTime(annoWindowStart)
	s.BreakerOpenUntil = getTime(annoBreakerOpenUntil)
	s.Failures = getInt(annoFailures)
	s.Refires = getInt(annoRefires)
	s.LastOutcome = m[annoLastOutcome]
	if v := m[annoOccurrences]; v != "" {
		if err := json.Unmarshal([]byte(v), &s.Occurrences); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", annoOccurrences, err))
		}
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("%w: %w", errCorruptState, errors.Join(errs...))
	}
	return s, nil
}

// verdict is the result of claim.
type verdict struct {
	Proceed bool
	Reason  string // skip reason when !Proceed
	Detail  string
	// Write: the state changed and must be stored.
	Write bool
	// Opened: this decision opened the breaker (escalate once it is stored).
	Opened bool
	// BreakerOpen is the breaker state after the decision.
	BreakerOpen bool
	// RecentlyRecycled counts pods of the workload recycled within the
	// cooldown (recycle only).
	RecentlyRecycled int
}

// claimInput is everything claim needs besides the stored state.
type claimInput struct {
	Occ      occurrence
	Recycle  bool
	Now      time.Time
	Cooldown time.Duration
	Breaker  BreakerConfig
	RateOK   bool
}

// claim decides whether the occurrence may act on the target and, if so,
// records the claim in st. It is pure: the caller stores st only when
// verdict.Write is set, through a conditional write, so that of several
// replicas deciding on the same state exactly one claim is stored.
func claim(st *targetState, in claimInput) verdict {
	now := in.Now
	for _, o := range st.Occurrences {
		if o.Key == in.Occ.Key {
			return verdict{Reason: ReasonDuplicate, Detail: "occurrence already handled at " + o.At.UTC().Format(time.RFC3339), BreakerOpen: now.Before(st.BreakerOpenUntil)}
		}
	}
	var v verdict
	if !st.BreakerOpenUntil.IsZero() {
		if now.Before(st.BreakerOpenUntil) {
			return verdict{Reason: ReasonBreakerOpen, Detail: "circuit breaker open until " + st.BreakerOpenUntil.UTC().Format(time.RFC3339), BreakerOpen: true}
		}
		// Half-open: the breaker expired; the next action is a new trial.
		st.BreakerOpenUntil = time.Time{}
		st.Failures, st.Refires = 0, 0
		st.WindowStart = now
		v.Write = true
	}
	if st.WindowStart.IsZero() || now.Sub(st.WindowStart) > in.Breaker.Window {
		st.WindowStart = now
		st.Failures, st.Refires = 0, 0
		v.Write = true
	}
	if in.Recycle {
		for _, o := range st.Occurrences {
			if o.Pod == "" || now.Sub(o.At) >= in.Cooldown {
				continue
			}
			if o.Pod == in.Occ.Pod {
				v.Reason, v.Detail = ReasonCooldown, fmt.Sprintf("pod %s recycled %s ago (cooldown %s)", o.Pod, now.Sub(o.At).Round(time.Second), in.Cooldown)
				return v
			}
			v.RecentlyRecycled++
		}
	} else if !st.LastActionAt.IsZero() && now.Sub(st.LastActionAt) < in.Cooldown {
		v.Reason, v.Detail = ReasonCooldown, fmt.Sprintf("last action %s ago (cooldown %s)", now.Sub(st.LastActionAt).Round(time.Second), in.Cooldown)
		return v
	}
	for _, o := range st.Occurrences {
		if o.Fingerprint == in.Occ.Fingerprint && now.Sub(o.At) <= in.Breaker.Window {
			// The same alert fires again after it was remediated: the fix
			// is not holding.
			st.Refires++
			v.Write = true
			if st.Refires >= in.Breaker.Refires {
				st.BreakerOpenUntil = now.Add(in.Breaker.OpenFor)
				v.Reason = ReasonBreakerOpen
				v.Detail = fmt.Sprintf("alert fired again %d times after remediation within %s", st.Refires, in.Breaker.Window)
				v.Opened, v.BreakerOpen = true, true
				return v
			}
			break
		}
	}
	if !in.RateOK {
		v.Reason, v.Detail = ReasonRateLimited, "global action rate limit reached"
		return v
	}
	occ := in.Occ
	occ.At = now
	st.Occurrences = append(st.Occurrences, occ)
	if n := len(st.Occurrences); n > maxOccurrences {
		st.Occurrences = append([]occurrence(nil), st.Occurrences[n-maxOccurrences:]...)
	}
	if !in.Recycle {
		st.LastActionAt = now
	}
	st.LastOutcome = "claimed"
	v.Proceed, v.Write = true, true
	return v
}

// finish records the outcome of an action that claim allowed. It returns
// true when this failure opened the breaker.
func finish(st *targetState, key, outcome string, now time.Time, b BreakerConfig) (opened bool) {
	for i := range st.Occurrences {
		if st.Occurrences[i].Key == key {
			st.Occurrences[i].Outcome = outcome
		}
	}
	st.LastOutcome = outcome
	switch outcome {
	case outcomeActed:
		st.Failures = 0
	case outcomeFailed:
		if st.WindowStart.IsZero() || now.Sub(st.WindowStart) > b.Window {
			st.WindowStart = now
			st.Failures, st.Refires = 0, 0
		}
		st.Failures++
		if st.Failures >= b.Failures && !now.Before(st.BreakerOpenUntil) {
			st.BreakerOpenUntil = now.Add(b.OpenFor)
			return true
		}
	}
	return false
}

// resolve marks the latest action for the alert as resolved. It returns
// false when there is nothing to record.
func resolve(st *targetState, fingerprint string) bool {
	for i := len(st.Occurrences) - 1; i >= 0; i-- {
		o := &st.Occurrences[i]
		if o.Fingerprint != fingerprint {
			continue
		}
		if o.Resolved {
			return false
		}
		o.Resolved = true
		return true
	}
	return false
}

// stateStore keeps targetState where every replica sees it and writes it
// with optimistic concurrency.
type stateStore interface {
	// update reads the state, calls fn and, if fn returns true, writes the
	// state back unless someone else wrote in between, in which case it
	// reads again and calls fn again.
	update(ctx context.Context, t target, fn func(st *targetState) bool) error
	read(ctx context.Context, t target) (targetState, error)
}

var (
	errTooManyConflicts = errors.New("too many concurrent updates")
	errCorruptState     = errors.New("unreadable remediation state")
)

// leaseStore keeps state in annotations of a coordination.k8s.io/v1 Lease
// in the target's namespace; resourceVersion makes writes conditional.
type leaseStore struct {
	kube     kubernetes.Interface
	identity string
}

// leaseName is warden-<kind>-<name>, shortened with a hash when it would
// exceed 63 characters.
func leaseName(t target) string {
	n := "warden-" + t.Kind + "-" + t.Name
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:52] + "-" + hex.EncodeToString(sum[:])[:10]
}

func (s *leaseStore) read(ctx context.Context, t target) (targetState, error) {
	l, err := s.kube.CoordinationV1().Leases(t.Namespace).Get(ctx, leaseName(t), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return targetState{}, nil
	}
	if err != nil {
		return targetState{}, fmt.Errorf("get lease %s/%s: %w", t.Namespace, leaseName(t), err)
	}
	return decodeState(l.Annotations)
}

func (s *leaseStore) update(ctx context.Context, t target, fn func(st *targetState) bool) error {
	leases := s.kube.CoordinationV1().Leases(t.Namespace)
	name := leaseName(t)
	for range maxUpdateAttempts {
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		exists := true
		if apierrors.IsNotFound(err) {
			exists, err = false, nil
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: t.Namespace,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"},
			}}
		}
		if err != nil {
			return fmt.Errorf("get lease %s/%s: %w", t.Namespace, name, err)
		}
		st, err := decodeState(l.Annotations)
		if err != nil {
			return fmt.Errorf("lease %s/%s: %w", t.Namespace, name, err)
		}
		if !fn(&st) {
			return nil
		}
		// Replace our annotations, keep anyone else's.
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		for _, k := range stateAnnotations {
			delete(l.Annotations, k)
		}
		for k, v := range st.encode(t) {
			l.Annotations[k] = v
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity = ptr.To(s.identity)
		l.Spec.RenewTime = &now
		if exists {
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: fieldManager})
		} else {
			l.Spec.AcquireTime = &now
			_, err = leases.Create(ctx, l, metav1.CreateOptions{FieldManager: fieldManager})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica wrote first: decide again on its state
		}
		if err != nil {
			return fmt.Errorf("write lease %s/%s: %w", t.Namespace, name, err)
		}
		return nil
	}
	return fmt.Errorf("lease %s/%s: %w", t.Namespace, name, errTooManyConflicts)
}

// redisStore keeps state in a hash in the Redis server the action flushes,
// in a database the flush does not touch, written in a WATCH/MULTI
// transaction (Redis's compare-and-set). The hash has no expiry: flush-cache
// runs when that Redis is full and evicting, and a volatile-* eviction
// policy evicts only keys with an expiry, so the record that prevents a
// second flush would be the first to go. There is one hash per allowlisted
// target, so nothing grows without bound.
type redisStore struct {
	client *redis.Client
}

func redisStateKey(t target) string { return "warden:remediator:" + t.String() }

func (s *redisStore) read(ctx context.Context, t target) (targetState, error) {
	m, err := s.client.HGetAll(ctx, redisStateKey(t)).Result()
	if err != nil {
		return targetState{}, fmt.Errorf("redis HGETALL %s: %w", redisStateKey(t), err)
	}
	return decodeState(m)
}

func (s *redisStore) update(ctx context.Context, t target, fn func(st *targetState) bool) error {
	key := redisStateKey(t)
	for range maxUpdateAttempts {
		err := s.client.Watch(ctx, func(tx *redis.Tx) error {
			m, err := tx.HGetAll(ctx, key).Result()
			if err != nil {
				return fmt.Errorf("redis HGETALL %s: %w", key, err)
			}
			st, err := decodeState(m)
			if err != nil {
				return fmt.Errorf("redis %s: %w", key, err)
			}
			if !fn(&st) {
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, key)
				p.HSet(ctx, key, st.encode(t))
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return fmt.Errorf("redis state %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("redis state %s: %w", key, errTooManyConflicts)
}

// rateLimiter is a sliding one-hour window of action claims in this
// process. Replicas do not share it: with N replicas the effective limit is
// at most N times the configured one (documented in docs/remediator.md).
type rateLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	times  []time.Time
}

func newRateLimiter(limit int) *rateLimiter {
	return &rateLimiter{limit: limit, window: time.Hour}
}

func (l *rateLimiter) setLimit(limit int) {
	l.mu.Lock()
	l.limit = limit
	l.mu.Unlock()
}

// reserve takes a slot if one is free. cancel gives it back (the action
// was not claimed after all).
func (l *rateLimiter) reserve(now time.Time) (ok bool, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == 0 {
		return true, func() {}
	}
	cut := 0
	for cut < len(l.times) && now.Sub(l.times[cut]) >= l.window {
		cut++
	}
	l.times = l.times[cut:]
	if len(l.times) >= l.limit {
		return false, func() {}
	}
	l.times = append(l.times, now)
	var once sync.Once
	return true, func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			for i := len(l.times) - 1; i >= 0; i-- {
				if l.times[i].Equal(now) {
					l.times = append(l.times[:i], l.times[i+1:]...)
					return
				}
			}
		})
	}
}

// permanentStoreError reports errors that waiting will not fix.
func permanentStoreError(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) ||
		apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		errors.Is(err, errTooManyConflicts) || errors.Is(err, errCorruptState)
}

// retryStore runs op until it succeeds, fails permanently, ctx ends or
// retryFor has passed, backing off exponentially in between. onRetry is
// called before each wait.
func retryStore(ctx context.Context, retryFor time.Duration, op func() error, onRetry func(err error, wait time.Duration)) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 15 * time.Second
	b.MaxElapsedTime = retryFor
	return backoff.RetryNotify(func() error {
		err := op()
		if err != nil && permanentStoreError(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), onRetry)
}
