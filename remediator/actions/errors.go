package actions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Errors a caller can test with errors.Is. All of them are permanent except
// ErrPDBBlocked, which is what remains after eviction was retried until the
// request's timeout.
var (
	// ErrOptedOut: the Deployment (or, for recycle, the Pod) carries the
	// annotation warden.io/remediation: "disabled". The caller records a skip.
	ErrOptedOut = errors.New(`target opted out of remediation (` + OptOutAnnotation + `: "disabled")`)
	// ErrPaused: a rollout restart of a paused Deployment would not roll out.
	ErrPaused = errors.New("deployment is paused (resume the rollout first)")
	// ErrPDBBlocked: the Eviction API refused, with 429, every attempt within
	// the timeout because a PodDisruptionBudget allows no disruption.
	ErrPDBBlocked = errors.New("blocked by PodDisruptionBudget")
	// ErrBlastRadius: recycling one more pod would exceed the request's
	// MaxFraction of the workload's pods.
	ErrBlastRadius = errors.New("blast radius exceeded")
	// ErrNotOwned: the pod to recycle is not a pod of the named Deployment.
	ErrNotOwned = errors.New("pod does not belong to the deployment")
	// ErrInvalidRequest: the request itself is malformed (unknown kind,
	// missing name, inconsistent bounds).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrNoReadyPods: reload found no ready pod with an IP to call.
	ErrNoReadyPods = errors.New("no ready pods")
)

// Metric reasons returned by Reason. The set is closed so that it can be used
// as a label value.
const (
	ReasonForbidden   = "forbidden"
	ReasonNotFound    = "not_found"
	ReasonConflict    = "conflict"
	ReasonPDBBlocked  = "pdb_blocked"
	ReasonPaused      = "paused"
	ReasonTimeout     = "timeout"
	ReasonUnavailable = "unavailable"
	ReasonInvalid     = "invalid"
	ReasonOptedOut    = "opted_out"
	ReasonBlastRadius = "blast_radius"
	ReasonOther       = "other"
)

// Reasons lists every value Reason can return, for pre-initialising metrics.
var Reasons = []string{
	ReasonForbidden, ReasonNotFound, ReasonConflict, ReasonPDBBlocked, ReasonPaused,
	ReasonTimeout, ReasonUnavailable, ReasonInvalid, ReasonOptedOut, ReasonBlastRadius, ReasonOther,
}

// HTTPStatusError is a non-2xx answer from a reload endpoint.
type HTTPStatusError struct {
	StatusCode int
	Status     string
}

func (e *HTTPStatusError) Error() string { return "HTTP " + e.Status }

// IsTransient reports whether err is worth retrying: API conflicts, server
// timeouts, throttling (including a PodDisruptionBudget that allows no
// disruption right now), internal errors, unavailability, 5xx answers from
// reload endpoints, network timeouts and refused connections. Errors wrapped
// with backoff.Permanent and the package's refusal errors are not transient.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		return false
	}
	if errors.Is(err, ErrPDBBlocked) {
		return true
	}
	if errors.Is(err, ErrOptedOut) || errors.Is(err, ErrPaused) || errors.Is(err, ErrBlastRadius) ||
		errors.Is(err, ErrNotOwned) || errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrNoReadyPods) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) {
		return true
	}
	if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsInvalid(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsUnauthorized(err) || apierrors.IsMethodNotSupported(err) ||
		apierrors.IsGone(err) || apierrors.IsAlreadyExists(err) {
		return false
	}
	var status *HTTPStatusError
	if errors.As(err, &status) {
		return status.StatusCode >= 500 || status.StatusCode == 429
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// Replies a server gives while it cannot serve yet; everything else
		// (NOAUTH, WRONGPASS, ERR ...) will not change on retry.
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

// Reason maps an error to a short, bounded label value (see Reasons).
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrOptedOut):
		return ReasonOptedOut
	case errors.Is(err, ErrPDBBlocked) || isPDBRefusal(err):
		return ReasonPDBBlocked
	case errors.Is(err, ErrPaused):
		return ReasonPaused
	case errors.Is(err, ErrBlastRadius):
		return ReasonBlastRadius
	case errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrNotOwned) ||
		apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return ReasonInvalid
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || isRedisAuthError(err):
		return ReasonForbidden
	case apierrors.IsNotFound(err):
		return ReasonNotFound
	case apierrors.IsConflict(err):
		return ReasonConflict
	case errors.Is(err, ErrNoReadyPods) || apierrors.IsServiceUnavailable(err) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET):
		return ReasonUnavailable
	case apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	}
	var status *HTTPStatusError
	if errors.As(err, &status) && status.StatusCode >= 500 {
		return ReasonUnavailable
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return ReasonTimeout
	}
	if apierrors.IsInternalError(err) || apierrors.IsTooManyRequests(err) {
		return ReasonUnavailable
	}
	return ReasonOther
}

// isPDBRefusal reports whether err is the Eviction API refusing because of a
// PodDisruptionBudget: a 429 (no disruption allowed now, or the budget not yet
// processed) or a 403 (budget in a bad state), both carrying a
// DisruptionBudget cause, as opposed to API priority-and-fairness throttling
// or RBAC.
func isPDBRefusal(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !(apierrors.IsTooManyRequests(err) || apierrors.IsForbidden(err)) {
		return false
	}
	if d := status.Status().Details; d != nil {
		for _, c := range d.Causes {
			if c.Type == policyv1.DisruptionBudgetCause {
				return true
			}
		}
	}
	return apierrors.IsTooManyRequests(err) && strings.Contains(status.Status().Message, "disruption budget")
}

func isRedisAuthError(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOPERM")
}

// permanent marks err as not worth retrying.
func permanent(err error) error {
	if err == nil {
		return nil
	}
	return backoff.Permanent(err)
}

func invalidf(format string, args ...any) error {
	return backoff.Permanent(fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...)))
}
