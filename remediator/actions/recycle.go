package actions

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
)

// recycle evicts one pod of a Deployment through the Eviction API, so that
// PodDisruptionBudgets decide whether it may go now.
//
// Blast radius: with N live pods of the workload (owned by one of its
// ReplicaSets, not terminating, not finished), at most
// floor(MaxFraction × N) pods may be recycled within the caller's window,
// this one included. Rounding down means a single-pod workload is recycled
// only with MaxFraction 1, and a fraction of 0.25 allows one pod out of
// four to seven.
func (e *executor) recycle(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	res := Result{Object: "Pod/" + req.Pod}
	if msgs := validation.IsDNS1123Subdomain(req.Pod); len(msgs) > 0 {
		return res, invalidf("pod %q: %s", req.Pod, msgs[0])
	}
	if math.IsNaN(req.MaxFraction) || req.MaxFraction <= 0 || req.MaxFraction > 1 {
		return res, invalidf("max fraction %v must be in (0, 1]", req.MaxFraction)
	}
	if req.RecentlyRecycled < 0 {
		return res, invalidf("recently recycled %d is negative", req.RecentlyRecycled)
	}
	d, selector, err := e.getDeploymentSelector(ctx, log, req)
	if err != nil {
		return res, err
	}
	pod, err := e.getOwnedPod(ctx, log, req, d, selector)
	if err != nil {
		return res, err
	}
	if pod.DeletionTimestamp != nil {
		res.Detail = "pod is already terminating; nothing to do"
		return res, nil
	}
	live, err := e.countLivePods(ctx, log, req, d, selector)
	if err != nil {
		return res, err
	}
	allowed := recycleAllowance(req.MaxFraction, live)
	if req.RecentlyRecycled+1 > allowed {
		return res, permanent(fmt.Errorf("recycle pod %s/%s: %w: %d recently recycled, max fraction %v of %d pods allows %d",
			req.Namespace, req.Pod, ErrBlastRadius, req.RecentlyRecycled, req.MaxFraction, live, allowed))
	}
	pdbBlocksDryRun, err := e.evictPod(ctx, log, req, pod)
	if err != nil {
		return res, err
	}
	if req.DryRun {
		res.Detail = fmt.Sprintf("dry run: would evict pod (uid %s, %d of %d allowed by max fraction)", pod.UID, req.RecentlyRecycled+1, allowed)
		if pdbBlocksDryRun {
			res.Detail = "dry run: a PodDisruptionBudget currently blocks evicting this pod"
		}
		log.Debug("recycle checked", "pdb_blocks", pdbBlocksDryRun)
		return res, nil
	}
	res.Changed = true
	res.Verified, res.Detail = e.verifyEviction(ctx, log, req, pod)
	log.Debug("pod recycled", "verified", res.Verified, "live_pods", live)
	return res, nil
}

// getOwnedPod reads the pod and refuses one that opted out or that does
// not belong to the Deployment.
func (e *executor) getOwnedPod(ctx context.Context, log *slog.Logger, req Request, d *appsv1.Deployment, selector labels.Selector) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := e.retry(ctx, log, "get pod", func(ctx context.Context) error {
		var err error
		pod, err = e.kube.CoreV1().Pods(req.Namespace).Get(ctx, req.Pod, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get pod %s/%s: %w", req.Namespace, req.Pod, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if optedOut(pod.Annotations) {
		return nil, permanent(fmt.Errorf("pod %s/%s: %w", req.Namespace, req.Pod, ErrOptedOut))
	}
	if !ownedBy(pod, d, selector) {
		return nil, permanent(fmt.Errorf("pod %s/%s, deployment %s: %w", req.Namespace, req.Pod, req.Deployment, ErrNotOwned))
	}
	return pod, nil
}

// countLivePods counts the workload's pods that are neither terminating
// nor finished: the base of the blast-radius cap.
func (e *executor) countLivePods(ctx context.Context, log *slog.Logger, req Request, d *appsv1.Deployment, selector labels.Selector) (int, error) {
	list, err := e.listPods(ctx, log, req, selector)
	if err != nil {
		return 0, err
	}
	live := 0
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && ownedBy(p, d, selector) {
			live++
		}
	}
	return live, nil
}

// evictPod evicts exactly the pod that was checked, retrying while a
// PodDisruptionBudget refuses. In a dry run a refusal is not an error; it
// is reported through pdbBlocksDryRun.
func (e *executor) evictPod(ctx context.Context, log *slog.Logger, req Request, pod *corev1.Pod) (pdbBlocksDryRun bool, err error) {
	eviction := &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		// Evict exactly the pod that was checked, not a namesake created since.
		DeleteOptions: &metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &pod.UID},
			DryRun:        dryRunOpt(req.DryRun),
		},
	}
	pods := e.kube.CoreV1().Pods(req.Namespace)
	err = e.retry(ctx, log, "evict pod", func(ctx context.Context) error {
		err := e.evict(ctx, eviction)
		switch {
		case err == nil:
			return nil
		case req.DryRun && isPDBRefusal(err):
			pdbBlocksDryRun = true
			return nil
		case apierrors.IsConflict(err):
			// Either a PodDisruptionBudget status update raced (retry), or
			// the UID precondition failed: the pod was replaced (stop).
			cur, gerr := pods.Get(ctx, req.Pod, metav1.GetOptions{})
			if apierrors.IsNotFound(gerr) || (gerr == nil && cur.UID != pod.UID) {
				return permanent(fmt.Errorf("evict pod %s/%s: pod was deleted or replaced meanwhile: %w", req.Namespace, req.Pod, err))
			}
		}
		return fmt.Errorf("evict pod %s/%s: %w", req.Namespace, req.Pod, err)
	})
	if err != nil && isPDBRefusal(err) {
		return false, fmt.Errorf("%w: %w", ErrPDBBlocked, err)
	}
	return pdbBlocksDryRun, err
}

// verifyEviction reads the pod back: gone, replaced or terminating is
// verified.
func (e *executor) verifyEviction(ctx context.Context, log *slog.Logger, req Request, pod *corev1.Pod) (verified bool, detail string) {
	var after *corev1.Pod
	err := e.retry(ctx, log, "verify eviction", func(ctx context.Context) error {
		var err error
		after, err = e.kube.CoreV1().Pods(req.Namespace).Get(ctx, req.Pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			after, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("read back pod %s/%s: %w", req.Namespace, req.Pod, err)
		}
		return nil
	})
	switch {
	case err != nil:
		return false, fmt.Sprintf("evicted, but read-back failed: %v", err)
	case after == nil || after.UID != pod.UID:
		return true, "pod evicted and deleted"
	case after.DeletionTimestamp != nil:
		grace := int64(0)
		if after.DeletionGracePeriodSeconds != nil {
			grace = *after.DeletionGracePeriodSeconds
		}
		return true, fmt.Sprintf("pod evicted, terminating (grace period %ds)", grace)
	}
	return false, "eviction accepted but the pod is not terminating"
}

// evict posts to the pod's policy/v1 eviction subresource, as EvictV1 does,
// but without client-go's own retries on 429: they sleep for the server's
// Retry-After (10s while a budget is unprocessed) and would hide the refusal
// from the retry loop that owns the timeout and classifies the error.
func (e *executor) evict(ctx context.Context, eviction *policyv1.Eviction) error {
	rc, ok := e.kube.CoreV1().RESTClient().(*rest.RESTClient)
	if !ok || rc == nil {
		return e.kube.CoreV1().Pods(eviction.Namespace).EvictV1(ctx, eviction)
	}
	return rc.Post().Namespace(eviction.Namespace).Resource("pods").Name(eviction.Name).
		SubResource("eviction").MaxRetries(0).Body(eviction).Do(ctx).Error()
}

// recycleAllowance is floor(fraction × pods); the epsilon keeps products such
// as 0.29 × 100 = 28.999999999999996 from losing a pod to rounding.
func recycleAllowance(fraction float64, pods int) int {
	return int(math.Floor(fraction*float64(pods) + 1e-9))
}

// ownedBy reports whether pod belongs to Deployment d: its controller is a
// ReplicaSet named "<deployment>-<pod-template-hash>" and its labels match the
// Deployment's selector. ReplicaSets are not read, so the remediator needs no
// permission on them.
func ownedBy(pod *corev1.Pod, d *appsv1.Deployment, selector labels.Selector) bool {
	if !selector.Matches(labels.Set(pod.Labels)) {
		return false
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "ReplicaSet" || !strings.HasPrefix(ref.APIVersion, "apps/") {
		return false
	}
	if hash, ok := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; ok {
		return ref.Name == d.Name+"-"+hash
	}
	suffix, ok := strings.CutPrefix(ref.Name, d.Name+"-")
	return ok && suffix != "" && !strings.Contains(suffix, "-")
}
