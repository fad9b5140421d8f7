package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// maxReasonLen keeps the reason annotation short; it is there for people
// reading `kubectl describe`, not for storage.
const maxReasonLen = 256

// restart performs a rollout restart the way kubectl does
// (polymorphichelpers/objectrestarter.go): a strategic-merge patch of the
// pod template's restartedAt annotation, refused for a paused Deployment.
// The patch carries the resourceVersion that was checked, so a Deployment
// paused or opted out between the read and the write makes the write fail
// with a conflict and the checks run again.
func (e *executor) restart(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	res := Result{Object: "Deployment/" + req.Deployment}
	deployments := e.kube.AppsV1().Deployments(req.Namespace)
	at := e.now().UTC().Format(time.RFC3339)
	var before, patched *appsv1.Deployment
	err := e.retry(ctx, log, "restart", func(ctx context.Context) error {
		d, err := deployments.Get(ctx, req.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		if optedOut(d.Annotations) {
			return permanent(fmt.Errorf("deployment %s/%s: %w", req.Namespace, req.Deployment, ErrOptedOut))
		}
		if d.Spec.Paused {
			return permanent(fmt.Errorf("restart deployment %s/%s: %w", req.Namespace, req.Deployment, ErrPaused))
		}
		before = d
		patch, err := restartPatch(d.ResourceVersion, at, e.identity, req.Reason)
		if err != nil {
			return permanent(err)
		}
		patched, err = deployments.Patch(ctx, req.Deployment, types.StrategicMergePatchType, patch,
			metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRunOpt(req.DryRun)})
		if err != nil {
			return fmt.Errorf("patch deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if req.DryRun {
		res.Detail = fmt.Sprintf("dry run: would set %s=%s (generation %d -> %d)",
			RestartedAtAnnotation, at, before.Generation, patched.Generation)
		log.Debug("restart checked", "generation", before.Generation)
		return res, nil
	}
	if patched.Generation == before.Generation {
		// The pod template already carried exactly these annotations: the
		// Deployment was restarted for the same reason within this second.
		res.Detail = fmt.Sprintf("pod template unchanged (already restarted at %s); generation %d", at, before.Generation)
		return res, nil
	}
	res.Changed = true

	// Read back: the generation must have advanced and the annotation must be
	// ours. Rollout progress is reported, not awaited; the caller's verification
	// (does the alert clear) covers the rest.
	var current *appsv1.Deployment
	verr := e.retry(ctx, log, "verify restart", func(ctx context.Context) error {
		var err error
		current, err = deployments.Get(ctx, req.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read back deployment %s/%s: %w", req.Namespace, req.Deployment, err)
		}
		return nil
	})
	if verr != nil {
		res.Detail = fmt.Sprintf("restarted (generation %d -> %d) but read-back failed: %v", before.Generation, patched.Generation, verr)
		return res, nil
	}
	res.Verified = current.Generation > before.Generation
	res.Detail = fmt.Sprintf("restartedAt=%s; generation %d -> %d; observedGeneration %d; %s",
		at, before.Generation, current.Generation, current.Status.ObservedGeneration, rolloutProgress(current))
	if current.Spec.Template.Annotations[RestartedAtAnnotation] != at {
		res.Verified = false
		res.Detail += fmt.Sprintf("; restartedAt now %q (written by someone else since)", current.Spec.Template.Annotations[RestartedAtAnnotation])
	}
	log.Debug("deployment restarted", "generation", current.Generation, "observed_generation", current.Status.ObservedGeneration)
	return res, nil
}

func restartPatch(resourceVersion, at, by, reason string) ([]byte, error) {
	annotations := map[string]any{
		RestartedAtAnnotation: at,
		RestartedByAnnotation: by,
		// An empty reason removes the previous restart's reason rather than
		// leaving a misleading one behind.
		ReasonAnnotation: nil,
	}
	if reason != "" {
		if len(reason) > maxReasonLen {
			reason = strings.ToValidUTF8(reason[:maxReasonLen], "")
		}
		annotations[ReasonAnnotation] = reason
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": resourceVersion},
		"spec": map[string]any{
			"template": map[string]any{
				"metadata": map[string]any{"annotations": annotations},
			},
		},
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encode restart patch: %w", err)
	}
	return b, nil
}

// rolloutProgress summarises status the way `kubectl rollout status` does,
// without waiting for it.
func rolloutProgress(d *appsv1.Deployment) string {
	switch r := RolloutStatus(d); r.Stage {
	case RolloutNotObserved:
		return "rollout not yet observed by the deployment controller"
	case RolloutFailed:
		return "rollout exceeded its progress deadline"
	default:
		return fmt.Sprintf("rollout: %d of %d replicas updated, %d available", d.Status.UpdatedReplicas, r.Desired, d.Status.AvailableReplicas)
	}
}
