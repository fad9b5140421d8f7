package actions

import (
	"context"
	"fmt"
	"log/slog"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// scale sets or changes a Deployment's replicas through the scale
// subresource, clamped to [MinReplicas, MaxReplicas].
func (e *executor) scale(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	res := Result{Object: "Deployment/" + req.Deployment}
	if err := validateScale(req); err != nil {
		return res, err
	}
	if _, err := e.getDeployment(ctx, log, req); err != nil {
		return res, err
	}
	deployments := e.kube.AppsV1().Deployments(req.Namespace)
	var from, to int32
	var note string
	var updated *autoscalingv1.Scale
	computed := false
	err := e.retry(ctx, log, "scale", func(ctx context.Context) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			sc, err := deployments.GetScale(ctx, req.Deployment, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("get scale of deployment %s/%s: %w", req.Namespace, req.Deployment, err)
			}
			// The target is computed once, from the count first read: a
			// retry after a write that landed but whose reply was lost
			// must not apply a delta twice. Only a conflict, which
			// proves the write did not land, recomputes it.
			if !computed {
				from = sc.Spec.Replicas
				to, note = desiredReplicas(req, from)
				computed = true
			}
			updated = nil
			if sc.Spec.Replicas == to {
				return nil
			}
			sc.Spec.Replicas = to
			updated, err = deployments.UpdateScale(ctx, req.Deployment, sc,
				metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRunOpt(req.DryRun)})
			if apierrors.IsConflict(err) {
				// Certainly not written: someone else changed the count,
				// so the next attempt applies the change to theirs.
				computed = false
			}
			if err != nil {
				return fmt.Errorf("update scale of deployment %s/%s: %w", req.Namespace, req.Deployment, err)
			}
			return nil
		})
	})
	if err != nil {
		return res, err
	}
	if note != "" {
		note = " (" + note + ")"
	}
	if to == from {
		res.Detail = fmt.Sprintf("already at %d replicas%s; nothing to do", from, note)
		return res, nil
	}
	if req.DryRun {
		res.Detail = fmt.Sprintf("dry run: would scale %d -> %d replicas%s", from, to, note)
		log.Debug("scale checked", "from", from, "to", to)
		return res, nil
	}
	res.Changed = true
	var current *autoscalingv1.Scale
	verr := e.retry(ctx, log, "verify scale", func(ctx context.Context) error {
		var err error
		current, err = deployments.GetScale(ctx, req.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read back scale of deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		return nil
	})
	if verr != nil {
		res.Detail = fmt.Sprintf("scaled %d -> %d replicas%s but read-back failed: %v", from, to, note, verr)
		return res, nil
	}
	res.Verified = current.Spec.Replicas == to
	res.Detail = fmt.Sprintf("scaled %d -> %d replicas%s; spec now %d, %d running", from, to, note, current.Spec.Replicas, current.Status.Replicas)
	log.Debug("deployment scaled", "from", from, "to", to, "spec_replicas", current.Spec.Replicas, "reply_received", updated != nil)
	return res, nil
}

func validateScale(req Request) error {
	switch {
	case req.Replicas == nil && req.Delta == nil:
		return invalidf("scale needs replicas or delta")
	case req.Replicas != nil && req.Delta != nil:
		return invalidf("scale takes replicas or delta, not both")
	case req.Replicas != nil && *req.Replicas < 0:
		return invalidf("replicas %d is negative", *req.Replicas)
	case req.Delta != nil && *req.Delta == 0:
		return invalidf("delta is zero")
	case req.MinReplicas < 0:
		return invalidf("min replicas %d is negative", req.MinReplicas)
	case req.MaxReplicas < 1:
		return invalidf("max replicas must be at least 1 (got %d)", req.MaxReplicas)
	case req.MaxReplicas < req.MinReplicas:
		return invalidf("max replicas %d is below min replicas %d", req.MaxReplicas, req.MinReplicas)
	}
	return nil
}

// desiredReplicas applies the request to the current count and clamps the
// result to [MinReplicas, MaxReplicas]. A relative change never moves the
// count the other way: a scale-down of a Deployment already below the
// minimum, or a scale-up of one already above the maximum, leaves it alone.
func desiredReplicas(req Request, current int32) (int32, string) {
	var want int64
	if req.Replicas != nil {
		want = int64(*req.Replicas)
	} else {
		want = int64(current) + int64(*req.Delta)
	}
	note := ""
	switch {
	case want < int64(req.MinReplicas):
		want, note = int64(req.MinReplicas), fmt.Sprintf("clamped to minimum %d", req.MinReplicas)
	case want > int64(req.MaxReplicas):
		want, note = int64(req.MaxReplicas), fmt.Sprintf("clamped to maximum %d", req.MaxReplicas)
	}
	if req.Delta != nil {
		if *req.Delta < 0 && want > int64(current) {
			return current, fmt.Sprintf("already at or below minimum %d", req.MinReplicas)
		}
		if *req.Delta > 0 && want < int64(current) {
			return current, fmt.Sprintf("already at or above maximum %d", req.MaxReplicas)
		}
	}
	return int32(want), note
}
