package remediator

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	kuberecord "k8s.io/client-go/tools/record"
)

// skipEventWindow: at most one Event per target and skip reason within it,
// unless the policy's gates.event_interval says otherwise.
// A flood of alerts on one target (every one a cooldown or breaker skip)
// would otherwise write an Event per alert; the skips are all counted in
// warden_remediator_skipped_total and logged.
const skipEventWindow = 10 * time.Minute

// newEventRecorder writes Events through client-go's broadcaster, which
// writes them in the background, merges repeats into one Event with a
// count and rate-limits per object, as Kubernetes components do.
func newEventRecorder(kube kubernetes.Interface, identity string) (kuberecord.EventBroadcaster, kuberecord.EventRecorder) {
	b := kuberecord.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return b, b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "warden-remediator", Host: identity})
}

// deploymentRef is the object an Event about a Deployment target refers to.
func deploymentRef(t target) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: t.Namespace, Name: t.Name}
}

type skipEventKey struct{ namespace, target, reason string }

// skipEvents lets one skip Event per target and reason through per window
// and counts the rest.
type skipEvents struct {
	mu   sync.Mutex
	last map[skipEventKey]time.Time
	held map[skipEventKey]int
}

func newSkipEvents() *skipEvents {
	return &skipEvents{last: map[skipEventKey]time.Time{}, held: map[skipEventKey]int{}}
}

// allow reports whether a skip Event may be written now, and how many skips
// of the same kind were held back since the last one.
func (s *skipEvents) allow(t target, reason string, now time.Time, window time.Duration) (bool, int) {
	k := skipEventKey{t.Namespace, t.String(), reason}
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.last[k]; ok && now.Sub(last) < window {
		s.held[k]++
		return false, 0
	}
	if len(s.last) > 4096 {
		// Bounded: forget everything rather than grow with the targets
		// of a long run; at worst one extra Event per target.
		clear(s.last)
		clear(s.held)
	}
	n := s.held[k]
	s.last[k], s.held[k] = now, 0
	return true, n
}
