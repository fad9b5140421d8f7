package actions

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestRolloutStatusStages(t *testing.T) {
	deadline := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet x has timed out progressing."}
	dep := func(gen, observed int64, s appsv1.DeploymentStatus, conds ...appsv1.DeploymentCondition) *appsv1.Deployment {
		d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(2))}, Status: s}
		d.Generation, d.Status.ObservedGeneration, d.Status.Conditions = gen, observed, conds
		return d
	}
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		want     RolloutStage
		progress string
	}{
		{"spec not yet observed", dep(3, 2, appsv1.DeploymentStatus{}), RolloutNotObserved, "rollout not yet observed by the deployment controller"},
		// As kubectl: a deadline condition left from before a new spec
		// does not fail the rollout the controller has not seen yet.
		{"deadline before observation", dep(3, 2, appsv1.DeploymentStatus{}, deadline), RolloutNotObserved, "rollout not yet observed by the deployment controller"},
		{"deadline exceeded", dep(3, 3, appsv1.DeploymentStatus{UpdatedReplicas: 1}, deadline), RolloutFailed, "rollout exceeded its progress deadline"},
		{"updating", dep(3, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2}), RolloutUpdating, "rollout: 1 of 2 replicas updated, 2 available"},
		{"old replicas terminating", dep(3, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 2, AvailableReplicas: 2}), RolloutTerminating, "rollout: 2 of 2 replicas updated, 2 available"},
		{"becoming available", dep(3, 3, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1}), RolloutBecomingAvailable, "rollout: 2 of 2 replicas updated, 1 available"},
		{"complete", dep(3, 3, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}), RolloutComplete, "rollout: 2 of 2 replicas updated, 2 available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := RolloutStatus(tt.d)
			if r.Stage != tt.want || r.Desired != 2 {
				t.Fatalf("RolloutStatus = %+v, want stage %d with 2 desired", r, tt.want)
			}
			if got := rolloutProgress(tt.d); got != tt.progress {
				t.Fatalf("rolloutProgress = %q, want %q", got, tt.progress)
			}
		})
	}
}
