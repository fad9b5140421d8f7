package actions

import appsv1 "k8s.io/api/apps/v1"

// RolloutStage is how far a Deployment's rollout has got, in the order
// `kubectl rollout status` checks it.
type RolloutStage int

// The stages of a rollout.
const (
	// RolloutNotObserved: the deployment controller has not yet seen the
	// latest spec (observedGeneration < generation).
	RolloutNotObserved RolloutStage = iota
	// RolloutFailed: the Progressing condition says
	// ProgressDeadlineExceeded.
	RolloutFailed
	// RolloutUpdating: fewer updated replicas than desired.
	RolloutUpdating
	// RolloutTerminating: old replicas are still running.
	RolloutTerminating
	// RolloutBecomingAvailable: updated replicas not yet available.
	RolloutBecomingAvailable
	// RolloutComplete: every desired replica updated and available.
	RolloutComplete
)

// Rollout is a Deployment's rollout status: its stage, with the desired
// replica count and, for a failed rollout, the condition's message.
type Rollout struct {
	Stage   RolloutStage
	Desired int32
	Message string
}

// RolloutStatus reads the rollout status the way `kubectl rollout status`
// does (kubectl/pkg/polymorphichelpers/rollout_status.go), without
// waiting.
func RolloutStatus(d *appsv1.Deployment) Rollout {
	r := Rollout{Desired: 1}
	if d.Spec.Replicas != nil {
		r.Desired = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration < d.Generation {
		r.Stage = RolloutNotObserved
		return r
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			r.Stage, r.Message = RolloutFailed, c.Message
			return r
		}
	}
	switch {
	case s.UpdatedReplicas < r.Desired:
		r.Stage = RolloutUpdating
	case s.Replicas > s.UpdatedReplicas:
		r.Stage = RolloutTerminating
	case s.AvailableReplicas < r.Desired:
		r.Stage = RolloutBecomingAvailable
	default:
		r.Stage = RolloutComplete
	}
	return r
}
