package remediator

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/warden-sre/warden/remediator/actions"
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
)

// maxUpdateAttempts bounds optimistic-concurrency retries of one decision;
// every conflict means another writer made progress.
const maxUpdateAttempts = 50

var stateAnnotations = []string{
	annoTarget, annoLastOccurrence, annoLastActionTime, annoLastOutcome, annoFailures,
	annoRefires, annoWindowStart, annoBreakerOpenUntil, annoOccurrences,
}

// encode is the stored form of the state: Lease annotations or the fields
// of the Redis hash.
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
	// cache, when set, answers the first read of each update.
	cache *leaseCache
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
	// The gates and the shared limit read before the claim; the cache
	// answers them without an API call once it has synced.
	if s.cache != nil {
		if l, ok := s.cache.get(t.Namespace, leaseName(t)); ok {
			if l == nil {
				return targetState{}, nil
			}
			return decodeState(l.Annotations)
		}
	}
	l, err := s.kube.CoordinationV1().Leases(t.Namespace).Get(ctx, leaseName(t), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return targetState{}, nil
	}
	if err != nil {
		return targetState{}, fmt.Errorf("get lease %s/%s: %w", t.Namespace, leaseName(t), err)
	}
	return decodeState(l.Annotations)
}

// list returns the remediator's Leases in the namespace: from the cache
// once it has synced, else from the API server.
func (s *leaseStore) list(ctx context.Context, namespace string) ([]*coordinationv1.Lease, error) {
	if s.cache != nil {
		if ls, ok := s.cache.list(namespace); ok {
			return ls, nil
		}
	}
	list, err := s.kube.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: leaseSelector})
	if err != nil {
		return nil, fmt.Errorf("list leases in %s: %w", namespace, err)
	}
	out := make([]*coordinationv1.Lease, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// leaseState is the record of one target as a Lease holds it.
type leaseState struct {
	lease  *coordinationv1.Lease
	target target
	state  targetState
	// err: the record could not be decoded; state holds what could.
	err error
}

// states returns the records of the targets held in the remediator's
// Leases in the namespace (from the cache once synced), ordered by Lease
// name. Leases that name no target, such as the approval records, are
// left out.
func (s *leaseStore) states(ctx context.Context, namespace string) ([]leaseState, error) {
	leases, err := s.list(ctx, namespace)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(leases, func(a, b *coordinationv1.Lease) int { return strings.Compare(a.Name, b.Name) })
	out := make([]leaseState, 0, len(leases))
	for _, l := range leases {
		t, ok := parseTarget(namespace, l.Annotations[annoTarget])
		if !ok {
			continue
		}
		st, err := decodeState(l.Annotations)
		out = append(out, leaseState{lease: l, target: t, state: st, err: err})
	}
	return out, nil
}

func (s *leaseStore) update(ctx context.Context, t target, fn func(st *targetState) bool) error {
	return updateLease(ctx, s.kube, s.cache, t.Namespace, leaseName(t), s.identity, func(l *coordinationv1.Lease) (bool, error) {
		st, err := decodeState(l.Annotations)
		if err != nil {
			return false, err
		}
		if !fn(&st) {
			return false, nil
		}
		// Replace our annotations, keep anyone else's.
		for _, k := range stateAnnotations {
			delete(l.Annotations, k)
		}
		for k, v := range st.encode(t) {
			l.Annotations[k] = v
		}
		return true, nil
	})
}

// updateLease is the one conditional write of the coordination Leases: it
// reads namespace/name (from cache on the first attempt when one is given;
// a write based on a stale copy conflicts and the next attempt reads the
// API server), lets mutate change the Lease (its annotations are never
// nil), and writes it back with the Lease's resourceVersion. When another
// replica wrote in between, it starts over on that replica's state.
func updateLease(ctx context.Context, kube kubernetes.Interface, cache *leaseCache, namespace, name, identity string, mutate func(l *coordinationv1.Lease) (write bool, err error)) error {
	leases := kube.CoordinationV1().Leases(namespace)
	for attempt := range maxUpdateAttempts {
		var l *coordinationv1.Lease
		var err error
		cached := false
		if attempt == 0 && cache != nil {
			if l, cached = cache.get(namespace, name); cached {
				if l == nil {
					err = apierrors.NewNotFound(coordinationv1.Resource("leases"), name)
				} else {
					l = l.DeepCopy()
				}
			}
		}
		if !cached {
			l, err = leases.Get(ctx, name, metav1.GetOptions{})
		}
		exists := true
		if apierrors.IsNotFound(err) {
			exists, err = false, nil
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: namespace,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "warden-remediator"},
			}}
		}
		if err != nil {
			return fmt.Errorf("get lease %s/%s: %w", namespace, name, err)
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		write, err := mutate(l)
		if err != nil {
			return fmt.Errorf("lease %s/%s: %w", namespace, name, err)
		}
		if !write {
			return nil
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity = ptr.To(identity)
		l.Spec.RenewTime = &now
		var written *coordinationv1.Lease
		if exists {
			written, err = leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: actions.FieldManager})
		} else {
			l.Spec.AcquireTime = &now
			written, err = leases.Create(ctx, l, metav1.CreateOptions{FieldManager: actions.FieldManager})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica wrote first: decide again on its state
		}
		if err != nil {
			return fmt.Errorf("write lease %s/%s: %w", namespace, name, err)
		}
		if cache != nil {
			cache.remember(written)
		}
		return nil
	}
	return fmt.Errorf("lease %s/%s: %w", namespace, name, errTooManyConflicts)
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

// redisOptions connect to the database of a Redis target that holds the
// remediator's own records, not the one flush-cache clears.
func redisOptions(rt RedisTarget) *redis.Options {
	o := &redis.Options{
		Addr:         rt.Address,
		Username:     rt.Username,
		Password:     rt.password,
		DB:           rt.CoordinationDB,
		DialTimeout:  5 * time.Second,
		ReadTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
		PoolSize:     4,
	}
	if rt.TLS {
		o.TLSConfig = tlsConfigFor(rt.Address)
	}
	return o
}

// tlsConfigFor verifies the server's certificate against its host name.
func tlsConfigFor(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
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
