package remediator

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// BenchmarkDecisionsUnderFlood posts a storm of distinct alerts (2,000
// alerts on 200 targets, 50 at a time, one alert per request) to a
// remediator coordinating through the real API server, with the client
// limits warden-remediator runs with, and reports decisions per second
// from the first request to the last decision. The executor only records,
// so the figure is the remediator's own cost: the first alert of each
// target claims and records an outcome, the other nine are cooldown skips.
// The target is every request answered 202 (non-202 = 0).
func BenchmarkDecisionsUnderFlood(b *testing.B) {
	const (
		targets     = 200
		perTarget   = 10
		concurrency = 50
	)
	k := kubeServer.Get(b)
	cfg := rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = 200, 400 // as cmd/warden-remediator sets them
	kube := kubeClient(b, k.Config)
	for range b.N {
		b.StopTimer()
		ns := setupTarget(b, kube, "auth-service", nil)
		var names []string
		for i := range targets {
			names = append(names, fmt.Sprintf("svc-%03d", i))
		}
		policy := fmt.Sprintf(`
defaults: {cooldown: 1h, timeout: 20s, retry_for: 1m}
rate_limit: {actions_per_hour: 0}
rules:
  - name: restart-on-memory
    matchers: ['alertname="HighMemoryUsage"']
    action: restart
    target: {namespace: '{{ .Labels.namespace }}', deployment: '{{ .Labels.deployment }}'}
    allow: {namespaces: [%s], deployments: [%s]}
`, ns, strings.Join(names, ", "))
		limited, err := kubeClientFor(cfg)
		if err != nil {
			b.Fatal(err)
		}
		exec := &recordingExecutor{}
		tr := startRemediator(b, policy, limited, exec, func(o *Options) { o.Logger = discardLogger() })
		// Let the Lease informer sync, as it has long before a storm in
		// a running replica.
		time.Sleep(time.Second)
		bodies := make(chan []byte, targets*perTarget)
		t0 := time.Now().Truncate(time.Second)
		for i := range targets * perTarget {
			labels := map[string]string{"namespace": ns, "deployment": names[i%targets]}
			bodies <- payload(firing("HighMemoryUsage", fmt.Sprintf("fp%05d", i), t0, labels))
		}
		close(bodies)
		b.StartTimer()
		start := time.Now()
		var refused atomic.Int64
		var wg sync.WaitGroup
		for range concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for body := range bodies {
					if code, _, _ := post(b, tr.server.URL+"/api/v1/alerts", body, nil); code != 202 {
						refused.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		posted := time.Since(start)
		accepted := float64(targets*perTarget - int(refused.Load()))
		for decisions(tr) < accepted {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("%v of %d decisions after 5 minutes", decisions(tr), targets*perTarget)
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		if n := len(exec.requests()); n > targets {
			b.Fatalf("%d actions, more than one per target (%d)", n, targets)
		}
		b.ReportMetric(accepted/elapsed.Seconds(), "decisions/s")
		b.ReportMetric(float64(refused.Load()), "non-202")
		b.ReportMetric(posted.Seconds(), "s-posting")
		tr.server.Close()
		b.StartTimer()
	}
}
