package remediator

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// BenchmarkDecisionsUnderFlood posts a storm of distinct alerts (2,000
// alerts on 200 targets, 50 at a time, one alert per request) to a
// remediator coordinating through the real API server, with the client
// limits, queue and workers warden-remediator runs with, and reports
// decisions per second from the first request to the last decision. The
// 200 target Deployments exist with finished rollouts, so every delivery
// passes the gates; the executor only records, so the figure is the
// remediator's own cost: the first alert of each target confirms the gates
// against the API server, claims and records an outcome, the other nine
// are cooldown refusals. The targets are every request answered 202
// (non-202 = 0) and the acknowledgement's p99 (ack-p99-ms).
func BenchmarkDecisionsUnderFlood(b *testing.B) {
	const (
		targets     = 200
		perTarget   = 10
		concurrency = 50
	)
	k := kubeServer.Get(b)
	// The client limits cmd/warden-remediator sets: one client for the
	// decisions and actions, one for the Events.
	cfg, eventCfg := rest.CopyConfig(k.Config), rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = 200, 1000
	eventCfg.QPS, eventCfg.Burst = 50, 300
	kube := kubeClient(b, k.Config)
	for range b.N {
		b.StopTimer()
		ns := setupTarget(b, kube, "auth-service", nil)
		var names []string
		for i := range targets {
			names = append(names, fmt.Sprintf("svc-%03d", i))
			createDeployment(b, kube, ns, names[i], 1, nil)
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
		events, err := kubeClientFor(eventCfg)
		if err != nil {
			b.Fatal(err)
		}
		exec := &recordingExecutor{}
		// Queue and workers at warden-remediator's defaults.
		tr := startRemediator(b, policy, limited, exec, func(o *Options) {
			o.EventKube = events
			o.Logger = discardLogger()
		})
		// The informers have long synced before a storm in a running
		// replica.
		waitSynced(b, tr, ns, true)
		bodies := make(chan []byte, targets*perTarget)
		t0 := time.Now().Truncate(time.Second)
		for i := range targets * perTarget {
			labels := map[string]string{"namespace": ns, "deployment": names[i%targets]}
			bodies <- payload(firing("HighMemoryUsage", fmt.Sprintf("fp%05d", i), t0, labels))
		}
		close(bodies)
		b.StartTimer()
		start := time.Now()
		var mu sync.Mutex
		var acks []time.Duration
		refused := 0
		var wg sync.WaitGroup
		for range concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for body := range bodies {
					sent := time.Now()
					code, _, _ := post(b, tr.server.URL+"/api/v1/alerts", body, nil)
					took := time.Since(sent)
					mu.Lock()
					acks = append(acks, took)
					if code != 202 {
						refused++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		posted := time.Since(start)
		accepted := float64(targets*perTarget - refused)
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
		slices.Sort(acks)
		b.ReportMetric(accepted/elapsed.Seconds(), "decisions/s")
		b.ReportMetric(float64(refused), "non-202")
		b.ReportMetric(posted.Seconds(), "s-posting")
		b.ReportMetric(float64(acks[len(acks)*99/100].Microseconds())/1000, "ack-p99-ms")
		tr.server.Close()
		b.StartTimer()
	}
}
