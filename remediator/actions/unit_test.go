package actions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
)

func pdbTooManyRequests() error {
	err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget auth needs 2 healthy pods and has 2 currently",
	})
	return err
}

func pdbForbidden() error {
	err := apierrors.NewForbidden(schema.GroupResource{Group: "policy", Resource: "poddisruptionbudget"}, "auth", errors.New("pdb disruptions allowed is negative"))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{Type: policyv1.DisruptionBudgetCause})
	return err
}

func TestErrorClassification(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	timeoutErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name      string
		err       error
		transient bool
		reason    string
	}{
		{"conflict", apierrors.NewConflict(gr, "auth", errors.New("modified")), true, ReasonConflict},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), true, ReasonTimeout},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true, ReasonTimeout},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), true, ReasonUnavailable},
		{"pdb 429", pdbTooManyRequests(), true, ReasonPDBBlocked},
		{"pdb blocked after retries", fmt.Errorf("%w: %w", ErrPDBBlocked, pdbTooManyRequests()), true, ReasonPDBBlocked},
		{"pdb in a bad state", pdbForbidden(), false, ReasonPDBBlocked},
		{"internal", apierrors.NewInternalError(errors.New("etcd")), true, ReasonUnavailable},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), true, ReasonUnavailable},
		{"forbidden", apierrors.NewForbidden(gr, "auth", errors.New("rbac")), false, ReasonForbidden},
		{"not found", apierrors.NewNotFound(gr, "auth"), false, ReasonNotFound},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "auth", nil), false, ReasonInvalid},
		{"bad request", apierrors.NewBadRequest("nope"), false, ReasonInvalid},
		{"wrapped forbidden", fmt.Errorf("patch: %w", apierrors.NewForbidden(gr, "auth", errors.New("rbac"))), false, ReasonForbidden},
		{"permanent wrapped conflict", backoff.Permanent(apierrors.NewConflict(gr, "auth", errors.New("x"))), false, ReasonConflict},
		{"opted out", fmt.Errorf("deployment x: %w", ErrOptedOut), false, ReasonOptedOut},
		{"paused", backoff.Permanent(ErrPaused), false, ReasonPaused},
		{"blast radius", ErrBlastRadius, false, ReasonBlastRadius},
		{"not owned", ErrNotOwned, false, ReasonInvalid},
		{"invalid request", invalidf("bad"), false, ReasonInvalid},
		{"no ready pods", ErrNoReadyPods, false, ReasonUnavailable},
		{"http 500", fmt.Errorf("POST x: %w", &HTTPStatusError{StatusCode: 500, Status: "500 Internal Server Error"}), true, ReasonUnavailable},
		{"http 503", &HTTPStatusError{StatusCode: 503, Status: "503 Service Unavailable"}, true, ReasonUnavailable},
		{"http 404", &HTTPStatusError{StatusCode: 404, Status: "404 Not Found"}, false, ReasonOther},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true, ReasonUnavailable},
		{"net timeout", timeoutErr, true, ReasonTimeout},
		{"deadline", context.DeadlineExceeded, true, ReasonTimeout},
		{"canceled", context.Canceled, false, ReasonOther},
		{"redis loading", redisReply("LOADING Redis is loading the dataset in memory"), true, ReasonOther},
		{"redis wrongpass", redisReply("WRONGPASS invalid username-password pair"), false, ReasonForbidden},
		{"redis err", redisReply("ERR unknown command"), false, ReasonOther},
		{"plain", errors.New("boom"), false, ReasonOther},
	}
	known := map[string]bool{}
	for _, r := range Reasons {
		known[r] = true
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.transient)
			}
			got := Reason(tt.err)
			if got != tt.reason {
				t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.reason)
			}
			if !known[got] {
				t.Errorf("Reason %q is not in Reasons", got)
			}
		})
	}
	if IsTransient(nil) || Reason(nil) != "" {
		t.Error("nil error must be neither transient nor have a reason")
	}
}

func TestDesiredReplicasClampsAndNeverReverses(t *testing.T) {
	tests := []struct {
		name     string
		replicas *int32
		delta    *int32
		current  int32
		want     int32
		note     string
	}{
		{"set within bounds", ptr[int32](4), nil, 2, 4, ""},
		{"set above max", ptr[int32](50), nil, 2, 6, "clamped to maximum 6"},
		{"set below min", ptr[int32](0), nil, 3, 2, "clamped to minimum 2"},
		{"add", nil, ptr[int32](2), 3, 5, ""},
		{"add past max", nil, ptr[int32](10), 3, 6, "clamped to maximum 6"},
		{"remove past min", nil, ptr[int32](-5), 4, 2, "clamped to minimum 2"},
		{"scale down when already below min stays", nil, ptr[int32](-1), 1, 1, "already at or below minimum 2"},
		{"scale up when already above max stays", nil, ptr[int32](1), 9, 9, "already at or above maximum 6"},
		{"at max, add", nil, ptr[int32](1), 6, 6, "clamped to maximum 6"},
		{"huge delta does not overflow", nil, ptr[int32](2147483647), 2147483000, 2147483000, "already at or above maximum 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{Replicas: tt.replicas, Delta: tt.delta, MinReplicas: 2, MaxReplicas: 6}
			got, note := desiredReplicas(req, tt.current)
			if got != tt.want || note != tt.note {
				t.Errorf("desiredReplicas(current=%d) = %d %q, want %d %q", tt.current, got, note, tt.want, tt.note)
			}
		})
	}
}

func TestRecycleAllowanceRoundsDown(t *testing.T) {
	tests := []struct {
		fraction float64
		pods     int
		want     int
	}{
		{1, 1, 1}, {0.5, 1, 0}, {0.5, 2, 1}, {0.25, 4, 1}, {0.25, 7, 1}, {0.25, 8, 2},
		{0.29, 100, 29}, {0.7, 10, 7}, {0.1, 3, 0}, {1, 0, 0},
	}
	for _, tt := range tests {
		if got := recycleAllowance(tt.fraction, tt.pods); got != tt.want {
			t.Errorf("recycleAllowance(%v, %d) = %d, want %d", tt.fraction, tt.pods, got, tt.want)
		}
	}
}

func TestOwnedBy(t *testing.T) {
	d := deploymentObject("ns", "auth", 1)
	selector, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	controller := true
	pod := func(labelSet map[string]string, kind, owner string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: labelSet}}
		if owner != "" {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: owner, Controller: &controller}}
		}
		return p
	}
	withHash := map[string]string{"app": "auth", appsv1.DefaultDeploymentUniqueLabelKey: "abc12"}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"owned", pod(withHash, "ReplicaSet", "auth-abc12"), true},
		{"owned without hash label", pod(map[string]string{"app": "auth"}, "ReplicaSet", "auth-abc12"), true},
		{"hash mismatch", pod(withHash, "ReplicaSet", "auth-zzz99"), false},
		{"other deployment with shared prefix", pod(map[string]string{"app": "auth"}, "ReplicaSet", "auth-service-abc12"), false},
		{"labels do not match", pod(map[string]string{"app": "policy"}, "ReplicaSet", "auth-abc12"), false},
		{"owned by a StatefulSet", pod(map[string]string{"app": "auth"}, "StatefulSet", "auth"), false},
		{"bare pod", pod(map[string]string{"app": "auth"}, "", ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ownedBy(tt.pod, d, selector); got != tt.want {
				t.Errorf("ownedBy = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRunRejectsInvalidRequests(t *testing.T) {
	client := fake.NewClientset(deploymentObject("ns", "auth", 2))
	ex := NewExecutor(client, testLogger(t))
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"empty kind", Request{}, "action kind is empty"},
		{"unknown kind", Request{Kind: "delete", Namespace: "ns", Deployment: "auth"}, `unknown action kind "delete"`},
		{"bad namespace", Request{Kind: Restart, Namespace: "Bad_NS", Deployment: "auth"}, `namespace "Bad_NS"`},
		{"missing deployment", Request{Kind: Restart, Namespace: "ns"}, `deployment ""`},
		{"negative timeout", Request{Kind: Restart, Namespace: "ns", Deployment: "auth", Timeout: -time.Second}, "timeout -1s is negative"},
		{"scale without amount", Request{Kind: Scale, Namespace: "ns", Deployment: "auth", MaxReplicas: 3}, "needs replicas or delta"},
		{"scale with both", Request{Kind: Scale, Namespace: "ns", Deployment: "auth", Replicas: ptr[int32](1), Delta: ptr[int32](1), MaxReplicas: 3}, "not both"},
		{"scale without max", Request{Kind: Scale, Namespace: "ns", Deployment: "auth", Delta: ptr[int32](1)}, "max replicas must be at least 1"},
		{"scale max below min", Request{Kind: Scale, Namespace: "ns", Deployment: "auth", Delta: ptr[int32](1), MinReplicas: 4, MaxReplicas: 3}, "below min replicas"},
		{"scale zero delta", Request{Kind: Scale, Namespace: "ns", Deployment: "auth", Delta: ptr[int32](0), MaxReplicas: 3}, "delta is zero"},
		{"recycle without pod", Request{Kind: Recycle, Namespace: "ns", Deployment: "auth", MaxFraction: 0.5}, `pod ""`},
		{"recycle fraction zero", Request{Kind: Recycle, Namespace: "ns", Deployment: "auth", Pod: "p", MaxFraction: 0}, "max fraction 0 must be in (0, 1]"},
		{"recycle fraction above one", Request{Kind: Recycle, Namespace: "ns", Deployment: "auth", Pod: "p", MaxFraction: 1.5}, "must be in (0, 1]"},
		{"reload bad scheme", Request{Kind: Reload, Namespace: "ns", Deployment: "auth", ReloadScheme: "ftp", ReloadPort: 80, ReloadPath: "/"}, `scheme "ftp"`},
		{"reload bad port", Request{Kind: Reload, Namespace: "ns", Deployment: "auth", ReloadPort: 0, ReloadPath: "/"}, "port 0 out of range"},
		{"reload relative path", Request{Kind: Reload, Namespace: "ns", Deployment: "auth", ReloadPort: 80, ReloadPath: "reload"}, "must start with /"},
		{"reload bad method", Request{Kind: Reload, Namespace: "ns", Deployment: "auth", ReloadPort: 80, ReloadPath: "/r", ReloadMethod: "DELETE"}, `method "DELETE"`},
		{"flush without address", Request{Kind: FlushCache}, `redis address ""`},
		{"flush negative db", Request{Kind: FlushCache, Redis: RedisTarget{Address: "127.0.0.1:6379", DB: -1}}, "db -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ex.Run(context.Background(), tt.req)
			if err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want ErrInvalidRequest containing %q", err, tt.want)
			}
			if IsTransient(err) || Reason(err) != ReasonInvalid {
				t.Errorf("IsTransient=%v Reason=%q, want permanent and invalid", IsTransient(err), Reason(err))
			}
		})
	}
	if _, err := NewExecutor(nil, nil).Run(context.Background(), Request{Kind: Restart, Namespace: "ns", Deployment: "auth"}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("restart without a client: %v, want ErrInvalidRequest", err)
	}
}

// The fake clientset is enough for the opt-out and paused refusals, which
// happen before any write.
func TestOptOutAndPausedAreRefusedWithoutWriting(t *testing.T) {
	optedOut := deploymentObject("ns", "quiet", 2)
	optedOut.Annotations = map[string]string{OptOutAnnotation: "Disabled"}
	paused := deploymentObject("ns", "paused", 2)
	paused.Spec.Paused = true
	client := fake.NewClientset(optedOut, paused)
	ex := NewExecutor(client, testLogger(t))
	tests := []struct {
		name   string
		req    Request
		target error
	}{
		{"restart opted out", Request{Kind: Restart, Namespace: "ns", Deployment: "quiet"}, ErrOptedOut},
		{"scale opted out", Request{Kind: Scale, Namespace: "ns", Deployment: "quiet", Delta: ptr[int32](1), MaxReplicas: 5}, ErrOptedOut},
		{"recycle opted out", Request{Kind: Recycle, Namespace: "ns", Deployment: "quiet", Pod: "quiet-x", MaxFraction: 1}, ErrOptedOut},
		{"reload opted out", Request{Kind: Reload, Namespace: "ns", Deployment: "quiet", ReloadPort: 80, ReloadPath: "/-/reload"}, ErrOptedOut},
		{"restart paused", Request{Kind: Restart, Namespace: "ns", Deployment: "paused"}, ErrPaused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client.ClearActions()
			_, err := ex.Run(context.Background(), tt.req)
			if !errors.Is(err, tt.target) {
				t.Fatalf("Run: %v, want %v", err, tt.target)
			}
			if IsTransient(err) {
				t.Error("refusal must be permanent")
			}
			for _, a := range client.Actions() {
				if a.GetVerb() != "get" && a.GetVerb() != "list" {
					t.Errorf("refused action wrote: %s %s", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
}

func TestReloadAgainstLoopbackPods(t *testing.T) {
	ns := "ns"
	t.Run("all pods answer 2xx", func(t *testing.T) {
		client := fake.NewClientset()
		port, servers := startReloadServers(t, []string{"127.0.0.1", "127.0.0.2"}, []int{204, 200})
		createWorkload(t, client, ns, "auth", 2, withPodIPs("127.0.0.1", "127.0.0.2"))
		ex := NewExecutor(client, testLogger(t), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
		res, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "auth", ReloadPort: port, ReloadPath: "/-/reload?full=1", Timeout: time.Minute})
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		if !res.Changed || !res.Verified {
			t.Errorf("result %+v: want changed and verified", res)
		}
		for i, s := range servers {
			if s.calls.Load() != 1 || s.method.Load() != "POST" || s.path.Load() != "/-/reload?full=1" {
				t.Errorf("server %d: %d calls, last %v %v; want one POST /-/reload?full=1", i, s.calls.Load(), s.method.Load(), s.path.Load())
			}
		}
	})
	t.Run("not ready pods are skipped", func(t *testing.T) {
		client := fake.NewClientset()
		port, servers := startReloadServers(t, []string{"127.0.0.1"}, []int{200})
		createWorkload(t, client, ns, "auth", 1, withPodIPs("127.0.0.1"), withNotReady())
		ex := NewExecutor(client, testLogger(t))
		_, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "auth", ReloadPort: port, ReloadPath: "/-/reload", Timeout: time.Minute})
		if !errors.Is(err, ErrNoReadyPods) {
			t.Fatalf("reload: %v, want ErrNoReadyPods", err)
		}
		if servers[0].calls.Load() != 0 {
			t.Error("a not-ready pod was called")
		}
	})
	// The retries below are bounded by count and the timeout is far
	// away, so a loaded machine makes the same attempts as an idle one and
	// the outcome is the failing pod's, never the deadline's.
	t.Run("a pod answering 500 is retried then reported", func(t *testing.T) {
		client := fake.NewClientset()
		port, servers := startReloadServers(t, []string{"127.0.0.1", "127.0.0.2"}, []int{200, 500})
		w := createWorkload(t, client, ns, "auth", 2, withPodIPs("127.0.0.1", "127.0.0.2"))
		ex := NewExecutor(client, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond), WithMaxAttempts(3))
		res, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "auth", ReloadPort: port, ReloadPath: "/-/reload", ReloadMethod: "put", Timeout: 5 * time.Minute})
		if err == nil {
			t.Fatal("reload succeeded with a pod answering 500")
		}
		if !strings.Contains(err.Error(), "1 of 2 pods") || !strings.Contains(err.Error(), w.pods[1].Name) || strings.Contains(err.Error(), w.pods[0].Name+":") {
			t.Errorf("error %q should name only the failing pod %s", err, w.pods[1].Name)
		}
		if Reason(err) != ReasonUnavailable {
			t.Errorf("Reason = %q, want unavailable", Reason(err))
		}
		if n := servers[1].calls.Load(); n != 3 {
			t.Errorf("failing pod called %d times, want 3 attempts", n)
		}
		if servers[0].calls.Load() != 1 || servers[0].method.Load() != "PUT" {
			t.Errorf("healthy pod: %d calls (%v), want exactly one PUT", servers[0].calls.Load(), servers[0].method.Load())
		}
		if !res.Changed || res.Verified {
			t.Errorf("result %+v: want changed (one pod reloaded) and not verified", res)
		}
	})
	t.Run("connection refused is retried then reported", func(t *testing.T) {
		client := fake.NewClientset()
		createWorkload(t, client, ns, "auth", 1, withPodIPs("127.0.0.1"))
		ex := NewExecutor(client, testLogger(t), WithBackoff(20*time.Millisecond, 100*time.Millisecond), WithMaxAttempts(3))
		_, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "auth", ReloadPort: freeLoopbackPort(t), ReloadPath: "/-/reload", Timeout: 5 * time.Minute})
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("reload: %v, want connection refused", err)
		}
		if !strings.Contains(err.Error(), "gave up after 3 attempts") || Reason(err) != ReasonUnavailable {
			t.Errorf("error %q (reason %q) should say it tried 3 times and be unavailable", err, Reason(err))
		}
	})
	t.Run("dry run calls nobody", func(t *testing.T) {
		client := fake.NewClientset()
		port, servers := startReloadServers(t, []string{"127.0.0.1"}, []int{200})
		createWorkload(t, client, ns, "auth", 1, withPodIPs("127.0.0.1"))
		ex := NewExecutor(client, testLogger(t))
		res, err := ex.Run(context.Background(), Request{Kind: Reload, Namespace: ns, Deployment: "auth", ReloadPort: port, ReloadPath: "/-/reload", DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Changed || servers[0].calls.Load() != 0 || !strings.Contains(res.Detail, "would send POST /-/reload to 1 ready pods") {
			t.Errorf("dry run: %+v, %d calls", res, servers[0].calls.Load())
		}
	})
}

func TestRetryStopsOnPermanentAndKeepsLastErrorOnTimeout(t *testing.T) {
	ex := NewExecutor(nil, testLogger(t), WithBackoff(5*time.Millisecond, 20*time.Millisecond)).(*executor)
	calls := 0
	err := ex.retry(context.Background(), ex.logger, "op", func(context.Context) error {
		calls++
		return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no"))
	})
	if calls != 1 || !apierrors.IsForbidden(err) || IsTransient(err) {
		t.Errorf("forbidden: %d calls, err %v; want one call and a permanent forbidden error", calls, err)
	}

	// However few attempts fit before the deadline on a busy machine, the
	// error that made it retry is kept.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls = 0
	err = ex.retry(ctx, ex.logger, "op", func(context.Context) error {
		calls++
		return apierrors.NewConflict(schema.GroupResource{Resource: "deployments"}, "d", errors.New("modified"))
	})
	if calls < 1 || !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "gave up after") {
		t.Errorf("conflict until the deadline: %d calls, err %v; want the conflict kept", calls, err)
	}

	// Cancelled after the third attempt: exactly three calls, last error
	// kept.
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	calls = 0
	err = ex.retry(cctx, ex.logger, "op", func(context.Context) error {
		calls++
		if calls == 3 {
			ccancel()
		}
		return apierrors.NewConflict(schema.GroupResource{Resource: "deployments"}, "d", errors.New("modified"))
	})
	if calls != 3 || !apierrors.IsConflict(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("conflict until cancelled: %d calls, err %v; want 3 calls, the conflict and the cancellation", calls, err)
	}

	calls = 0
	err = ex.retry(context.Background(), ex.logger, "op", func(context.Context) error {
		calls++
		if calls < 3 {
			return apierrors.NewServiceUnavailable("starting")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("recovering op: %d calls, err %v; want success on the third", calls, err)
	}
}

// redisReply is an error reply as go-redis returns it.
type redisReply string

func (e redisReply) Error() string { return string(e) }
func (redisReply) RedisError()     {}

var _ redis.Error = redisReply("")
