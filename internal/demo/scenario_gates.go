package demo

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/warden-sre/warden/internal/testenv"
)

// The gates' steps: situations in which a person would not restart
// auth-service although its error rate is high, so the remediator does not
// either.

const alertDatabaseDown = "DatabaseDown"

// releaseImage is the version a person rolls out in stepRolloutRefused.
const releaseImage = "ghcr.io/rust-security/auth-service:1.4.3"

// stepDatabaseDownBlocks: PostgreSQL goes down and auth-service fails
// with it. The policy's block_when keeps the remediator from restarting
// auth-service while DatabaseDown fires: the cause is elsewhere.
func stepDatabaseDownBlocks(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	const svc = "auth-service"
	before := e.Restarts(svc)
	mark := e.markRefusals(svc, "blocked_by_alert")
	e.tl.Printf("STEP", "PostgreSQL (auth-db) crashes")
	e.Postgres.Kill()
	dbMatch := map[string]string{"target": "auth-db", "reason": "unreachable"}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertDatabaseDown, "firing", dbMatch); err != nil {
		return err
	}
	// block_when reads the firing alerts from Alertmanager.
	if _, err := e.Alertmanager.WaitForAlert(ctx, alertDatabaseDown, dbMatch); err != nil {
		return err
	}
	refusal, err := e.errorBurstRefused(ctx, mark, "auth-service cannot reach its database", "while "+alertDatabaseDown+" fires")
	if err != nil {
		return err
	}
	if !strings.Contains(refusal.Detail, alertDatabaseDown) {
		return fmt.Errorf("blocked_by_alert refusal does not name %s: %q", alertDatabaseDown, refusal.Detail)
	}
	// The errors stopped before the database is back: a HighErrorRate
	// still firing once DatabaseDown has resolved would be acted on.
	e.tl.Printf("STEP", "PostgreSQL is back")
	if err := e.Postgres.Start(); err != nil {
		return fmt.Errorf("restart PostgreSQL: %w", err)
	}
	if err := e.waitResolved(ctx, alertDatabaseDown, dbMatch); err != nil {
		return err
	}
	if n := e.Restarts(svc); n != before {
		return fmt.Errorf("auth-service was restarted during the database step (%d -> %d)", before, n)
	}
	return nil
}

// stepRolloutRefused: a person rolls out a new version of auth-service,
// and while the rollout is in progress its error rate rises. Restarting in
// the middle of someone's rollout would hide a bad release (rolling back
// is Level 2), so the remediator refuses with rollout_in_progress.
func stepRolloutRefused(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	const svc = "auth-service"
	before := e.Restarts(svc)
	mark := e.markRefusals(svc, "rollout_in_progress")
	e.tl.Printf("STEP", "a person rolls out %s (kubectl set image); the new pod is slow to become ready", releaseImage)
	if err := e.startRelease(ctx, svc, releaseImage); err != nil {
		return err
	}
	// The person sees the errors and deals with the release; here the
	// errors stop, then the rollout completes.
	if _, err := e.errorBurstRefused(ctx, mark, "during the rollout auth-service fails", "during the rollout"); err != nil {
		return err
	}
	if n := e.Restarts(svc); n != before {
		return fmt.Errorf("auth-service was restarted during the rollout (%d -> %d)", before, n)
	}
	return e.finishRelease(ctx, svc)
}

// refusalMark is where a step starts waiting for a refusal: how many
// refusals for the reason and how many restarts of the service were
// decided before.
type refusalMark struct {
	svc, reason    string
	refused, acted int
}

func (e *Env) markRefusals(svc, reason string) refusalMark {
	return refusalMark{svc: svc, reason: reason,
		refused: len(e.Decisions(refusedOn(svc, reason))), acted: len(e.Decisions(actedOn(svc)))}
}

// errorBurstRefused makes the mark's service answer half of its requests
// with 500 until HighErrorRate fires and a remediator refuses it for the
// mark's reason, checks that nothing restarted the service, then ends the
// errors and waits until HighErrorRate has resolved. It returns the
// refusal.
func (e *Env) errorBurstRefused(ctx context.Context, m refusalMark, why, when string) (Decision, error) {
	before := e.Restarts(m.svc)
	e.tl.Printf("STEP", "%s: 50%% of requests answer 500", why)
	if err := e.SetFault(ctx, m.svc, map[string]any{"error_rate": 0.5}); err != nil {
		return Decision{}, err
	}
	match := map[string]string{"job": m.svc}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertHighErrorRate, "firing", match); err != nil {
		return Decision{}, err
	}
	refusal, err := e.waitRefusal(ctx, m)
	if err != nil {
		return refusal, err
	}
	if n := e.Restarts(m.svc); n != before {
		return refusal, fmt.Errorf("%s was restarted %s (%d -> %d)", m.svc, when, before, n)
	}
	e.tl.Printf("CHECK", "%s not restarted %s (%s): %s", m.svc, when, m.reason, refusal.Detail)
	if err := e.ResetFaults(ctx, m.svc); err != nil {
		return refusal, err
	}
	return refusal, e.waitResolved(ctx, alertHighErrorRate, match)
}

// refusedOn matches the skipped HighErrorRate decisions on a service for a
// reason.
func refusedOn(svc, reason string) func(Decision) bool {
	return func(d Decision) bool {
		return d.Alertname == alertHighErrorRate && d.Outcome == "skipped" && d.Reason == reason && strings.Contains(d.Target, svc)
	}
}

func actedOn(svc string) func(Decision) bool {
	return func(d Decision) bool {
		return d.Alertname == alertHighErrorRate && d.Outcome == "acted" && strings.Contains(d.Target, svc)
	}
}

// waitRefusal waits for a new refusal of HighErrorRate on the mark's
// service for its reason and returns it; a restart decided meanwhile fails
// at once.
func (e *Env) waitRefusal(ctx context.Context, m refusalMark) (Decision, error) {
	var got Decision
	err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		if acted := e.Decisions(actedOn(m.svc)); len(acted) > m.acted {
			return false, fmt.Errorf("the remediator acted: %s", describeDecision(acted[len(acted)-1]))
		}
		list := e.Decisions(refusedOn(m.svc, m.reason))
		if len(list) <= m.refused {
			return false, nil
		}
		got = list[len(list)-1]
		return true, nil
	})
	if err != nil {
		return got, fmt.Errorf("waiting for HighErrorRate on %s to be refused with %s: %w", m.svc, m.reason, err)
	}
	return got, nil
}

// startRelease changes the Deployment's image as `kubectl set image` does
// and reports the rollout under way, as the deployment controller would
// while the new pod is not yet ready: one updated replica, not available,
// beside the old one.
func (e *Env) startRelease(ctx context.Context, name, image string) error {
	deployments := e.Kube.Client.AppsV1().Deployments(Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deployments.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		if d, err = deployments.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-set"}); err != nil {
			return err
		}
		now := metav1.Now()
		d.Status.ObservedGeneration = d.Generation
		d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 2, 1, 1, 1
		d.Status.UnavailableReplicas = 1
		for i, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing {
				d.Status.Conditions[i].Reason = "ReplicaSetUpdated"
				d.Status.Conditions[i].Message = fmt.Sprintf("Deployment %q is progressing.", name)
				d.Status.Conditions[i].LastUpdateTime = now
			}
		}
		_, err = deployments.UpdateStatus(ctx, d, metav1.UpdateOptions{})
		return err
	})
}

// finishRelease lets the kubelet stand-in roll the new version out: the
// process restarts and the Deployment reports the rollout complete.
func (e *Env) finishRelease(ctx context.Context, name string) error {
	d, err := e.Kube.Client.AppsV1().Deployments(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	e.kubelet.mu.Lock()
	w := e.kubelet.workloads[name]
	e.kubelet.mu.Unlock()
	if w == nil {
		return fmt.Errorf("the kubelet stand-in does not run %s", name)
	}
	if err := e.kubelet.roll(ctx, w, d); err != nil {
		return fmt.Errorf("finish the rollout of %s: %w", name, err)
	}
	e.tl.Printf("STEP", "the rollout of %s completes (%s)", name, d.Spec.Template.Spec.Containers[0].Image)
	return nil
}
