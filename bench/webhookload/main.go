// Command webhookload posts Alertmanager webhook payloads at a fixed rate
// and reports acknowledgement latency (p50/p90/p99/max) and throughput.
//
// Without --url it starts a remediator in-process on loopback, with a
// policy that matches none of the generated alerts (so the measurement is
// the webhook path: authenticate, decode, queue, acknowledge).
//
//	go run ./bench/webhookload --rate 2000 --duration 10s
//	go run ./bench/webhookload --url http://127.0.0.1:10188/api/v1/alerts --token-file token
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/alertmanager/notify/webhook"
	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/warden-sre/warden/remediator"
	"github.com/warden-sre/warden/remediator/actions"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("webhookload", "Load generator for the remediator's webhook.")
	var (
		target      = app.Flag("url", "Webhook URL; empty starts a remediator in-process on loopback.").String()
		tokenFile   = app.Flag("token-file", "Bearer token file for --url.").String()
		rate        = app.Flag("rate", "Requests per second (open loop).").Default("2000").Int()
		duration    = app.Flag("duration", "How long to send.").Default("10s").Duration()
		perRequest  = app.Flag("alerts-per-request", "Alerts in each payload.").Default("1").Int()
		concurrency = app.Flag("concurrency", "Maximum requests in flight.").Default("256").Int()
	)
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *rate < 1 || *perRequest < 1 || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "--rate, --alerts-per-request and --concurrency must be positive")
		return 2
	}
	token := "load-test-token"
	if *target == "" {
		url, stop, err := startInProcess(token)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
		*target = url
	} else if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		token = strings.TrimSpace(string(b))
	}

	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: *concurrency, MaxIdleConnsPerHost: *concurrency, DialContext: (&net.Dialer{}).DialContext},
	}
	total := int(duration.Seconds() * float64(*rate))
	interval := time.Second / time.Duration(*rate)
	latencies := make([]time.Duration, total)
	codes := make([]int, total)
	// Bodies are built before the clock starts, so the generator spends
	// its CPU on sending, not on encoding.
	bodies := make([][]byte, total)
	for i := range bodies {
		bodies[i] = payload(i, *perRequest)
	}
	sem := make(chan struct{}, *concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		// Open loop: request i is due at start + i*interval; latency is
		// measured from that moment, so a stalled server is not hidden by
		// the sender slowing down (coordinated omission).
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequest(http.MethodPost, *target, bytes.NewReader(bodies[i]))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				codes[i] = -1
				latencies[i] = time.Since(due)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			latencies[i] = time.Since(due)
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	byCode := map[int]int{}
	for _, c := range codes {
		byCode[c]++
	}
	slices.Sort(latencies)
	q := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	fmt.Printf("requests %d (%d alerts each) in %s: %.0f requests/s, %.0f alerts/s\n",
		total, *perRequest, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), float64(total**perRequest)/elapsed.Seconds())
	fmt.Printf("latency p50 %s  p90 %s  p99 %s  max %s\n", q(.50), q(.90), q(.99), latencies[len(latencies)-1])
	fmt.Printf("status codes %v (-1 = transport error)\n", byCode)
	if byCode[http.StatusAccepted] != total {
		return 1
	}
	return 0
}

func payload(i, n int) []byte {
	alerts := make(amtemplate.Alerts, n)
	for j := range alerts {
		alerts[j] = amtemplate.Alert{
			Status:      "firing",
			Labels:      amtemplate.KV{"alertname": "LoadTest", "namespace": "rust-security", "pod": fmt.Sprintf("auth-service-%d", j)},
			Annotations: amtemplate.KV{"summary": "load test"},
			StartsAt:    time.Unix(1_700_000_000, 0).UTC(),
			Fingerprint: fmt.Sprintf("%08x%08x", i, j),
		}
	}
	b, _ := json.Marshal(webhook.Message{
		Data: &amtemplate.Data{
			Receiver: "warden", Status: "firing", Alerts: alerts,
			GroupLabels: amtemplate.KV{"alertname": "LoadTest"}, CommonLabels: amtemplate.KV{}, CommonAnnotations: amtemplate.KV{},
			ExternalURL: "http://alertmanager:9093",
		},
		Version:  "4",
		GroupKey: `{}:{alertname="LoadTest"}`,
	})
	return b
}

// noopExecutor is never called: no rule matches the generated alerts.
type noopExecutor struct{}

func (noopExecutor) Run(context.Context, actions.Request) (actions.Result, error) {
	return actions.Result{}, nil
}

func startInProcess(token string) (string, func(), error) {
	policy, err := remediator.ParsePolicy([]byte(`
rules:
  - name: never
    matchers: ['alertname="SomethingElse"']
    action: restart
    target: {namespace: rust-security, deployment: auth-service}
    allow: {namespaces: [rust-security], deployments: [auth-service]}
`))
	if err != nil {
		return "", nil, err
	}
	r, err := remediator.New(remediator.Options{
		Kube:       fake.NewClientset(),
		Executor:   noopExecutor{},
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewRegistry(),
		Identity:   "webhookload",
		QueueSize:  100000,
		Auth:       remediator.Auth{BearerToken: token},
	}, policy)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return "", nil, err
	}
	srv := &http.Server{Handler: r.WebhookHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/api/v1/alerts", func() {
		_ = srv.Close()
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = r.Shutdown(sctx)
		cancel()
	}, nil
}
