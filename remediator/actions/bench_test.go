package actions

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkRestart measures Run for a rollout restart against the real API
// server: read and checks, the pod-template patch, and the read-back that
// verifies the generation advanced (ns/op). The metric ns-to-write/op is the
// time from calling Run to the API server's answer to the PATCH, i.e. when
// the change is stored.
func BenchmarkRestart(b *testing.B) {
	k := kubeServer.Get(b)
	ns := createNamespace(b, k.Client)
	createWorkload(b, k.Client, ns, "auth-service", 0)

	var patched atomic.Int64 // UnixNano when the last PATCH answer arrived
	cfg := rest.CopyConfig(k.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if r.Method == http.MethodPatch {
				patched.Store(time.Now().UnixNano())
			}
			return resp, err
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ex := NewExecutor(client, testLogger(b))
	ctx := context.Background()
	b.ReportAllocs()
	var toWrite time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		// A distinct reason per iteration changes the template even when
		// several restarts fall into the same second of restartedAt.
		res, err := ex.Run(ctx, Request{Kind: Restart, Namespace: ns, Deployment: "auth-service", Reason: fmt.Sprintf("bench %d", i)})
		if err != nil {
			b.Fatal(err)
		}
		if !res.Verified {
			b.Fatalf("restart %d not verified: %s", i, res.Detail)
		}
		toWrite += time.Duration(patched.Load() - start.UnixNano())
	}
	b.ReportMetric(float64(toWrite.Nanoseconds())/float64(i), "ns-to-write/op")
}

// BenchmarkRestartDryRun is the same path with a server-side dry-run patch:
// what a dry-run policy costs.
func BenchmarkRestartDryRun(b *testing.B) {
	k := kubeServer.Get(b)
	ns := createNamespace(b, k.Client)
	createWorkload(b, k.Client, ns, "auth-service", 0)
	ex := NewExecutor(k.Client, testLogger(b))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ex.Run(ctx, Request{Kind: Restart, Namespace: ns, Deployment: "auth-service", DryRun: true}); err != nil {
			b.Fatal(err)
		}
	}
}
