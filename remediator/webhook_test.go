package remediator

import (
	"github.com/warden-sre/warden/internal/testenv"

	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"
)

func TestWebhookRejectsBadRequests(t *testing.T) {
	exec := &recordingExecutor{}
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), exec, func(o *Options) {
		o.MaxBodyBytes = 4096
		o.Auth = Auth{BearerToken: testToken, Username: "am", Password: "pw"}
	})
	url := tr.server.URL + "/api/v1/alerts"
	good := payload(firing("Other", "abc1", time.Now(), nil))
	wrongVersion := bytes.Replace(good, []byte(`"version":"4"`), []byte(`"version":"3"`), 1)
	tests := []struct {
		name string
		body []byte
		hdr  map[string]string
		code int
		want string
	}{
		{"missing credentials", good, map[string]string{"Authorization": ""}, 401, "unauthorized"},
		{"wrong token", good, map[string]string{"Authorization": "Bearer nope"}, 401, "unauthorized"},
		{"token of other length", good, map[string]string{"Authorization": "Bearer " + testToken + "x"}, 401, "unauthorized"},
		{"wrong basic password", good, map[string]string{"Authorization": "Basic YW06bm9wZQ=="}, 401, "unauthorized"},
		{"basic auth accepted", good, map[string]string{"Authorization": "Basic YW06cHc="}, 202, "queued"},
		{"bearer accepted", good, nil, 202, "queued"},
		{"oversized body", append(append([]byte(nil), good...), bytes.Repeat([]byte(" "), 5000)...), nil, 413, "larger than 4096"},
		{"wrong content type", good, map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{"malformed JSON", []byte(`{"version":"4","alerts":[`), nil, 400, "malformed JSON"},
		{"trailing data", append(append([]byte(nil), good...), []byte(`{}`)...), nil, 400, "data after"},
		{"wrong version", wrongVersion, nil, 400, `unsupported payload version "3"`},
		{"missing alerts", []byte(`{"version":"4"}`), nil, 400, "missing alerts"},
		{"alert without fingerprint", payload(firing("A", "", time.Now(), nil)), nil, 400, "fingerprint"},
		{"alert with bad status", bytes.Replace(good, []byte(`"status":"firing","labels"`), []byte(`"status":"burning","labels"`), 1), nil, 400, "status must be"},
		{"alert without startsAt", payload(firing("A", "ab", time.Time{}, nil)), nil, 400, "startsAt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := post(t, url, tc.body, tc.hdr)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.code, tc.want)
			}
			if code == 401 && !strings.Contains(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate challenge: %v", hdr)
			}
		})
	}
	if got := testutil.ToFloat64(tr.metrics.webhookRequests.WithLabelValues("401")); got != 4 {
		t.Errorf("webhook_requests_total{code=401} = %v, want 4", got)
	}
	if got := testutil.ToFloat64(tr.metrics.webhookRequests.WithLabelValues("400")); got != 7 {
		t.Errorf("webhook_requests_total{code=400} = %v, want 7", got)
	}
	if got := testutil.ToFloat64(tr.metrics.webhookRequests.WithLabelValues("413")); got != 1 {
		t.Errorf("webhook_requests_total{code=413} = %v, want 1", got)
	}
	// Without Content-Length (chunked) the cap applies while reading.
	chunked, _ := http.NewRequest(http.MethodPost, url, io.MultiReader(bytes.NewReader(good), bytes.NewReader(bytes.Repeat([]byte(" "), 5000))))
	chunked.Header.Set("Content-Type", "application/json")
	chunked.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(chunked)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || chunked.ContentLength != 0 {
		t.Errorf("chunked oversized body: %d (content length %d), want 413", resp.StatusCode, chunked.ContentLength)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
}

func TestWebhookRefusesEverythingWithoutCredentials(t *testing.T) {
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), &recordingExecutor{}, func(o *Options) { o.Auth = Auth{} })
	if code, _, _ := post(t, tr.server.URL+"/webhook", payload(firing("A", "ab", time.Now(), nil)), map[string]string{"Authorization": ""}); code != 401 {
		t.Fatalf("no credentials configured and no --no-auth: got %d, want 401", code)
	}
	tr.SetAuth(Auth{Disabled: true})
	if code, _, _ := post(t, tr.server.URL+"/webhook", payload(firing("A", "ab", time.Now(), nil)), map[string]string{"Authorization": ""}); code != 202 {
		t.Fatalf("--no-auth: got %d, want 202", code)
	}
}

func TestWebhookAcceptsDeclinedAlertAndRecordsSkip(t *testing.T) {
	exec := &recordingExecutor{}
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), exec, nil)
	code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(
		firing("DiskFull", "aa01", time.Now(), nil),
		firing("DiskFull", "aa02", time.Now(), nil),
	), nil)
	if code != http.StatusAccepted {
		t.Fatalf("declined alert: got %d %q, want 202 (Alertmanager must not retry)", code, body)
	}
	skipped := tr.metrics.skipped.WithLabelValues(ReasonNoMatchingRule)
	testenv.WaitFor(t, 30*time.Second, "skip to be recorded", func() bool { return testutil.ToFloat64(skipped) == 2 })
	if n := len(exec.requests()); n != 0 {
		t.Fatalf("executor ran %d times for a declined alert", n)
	}
}

func TestWebhookAnswers503WhenQueueIsFullOrShuttingDown(t *testing.T) {
	exec := &recordingExecutor{block: make(chan struct{})}
	kube := fake.NewClientset()
	tr := startRemediator(t, declinePolicy, kube, exec, func(o *Options) { o.QueueSize = 2; o.Workers = 1 })
	url := tr.server.URL + "/api/v1/alerts"
	t0 := time.Now()
	a := func(i int) amtemplate.Alert {
		return firing("HighMemoryUsage", fmt.Sprintf("f%03d", i), t0, nil)
	}
	// The worker takes the first alert and blocks in the executor.
	if code, body, _ := post(t, url, payload(a(0)), nil); code != 202 {
		t.Fatalf("first: %d %s", code, body)
	}
	testenv.WaitFor(t, 30*time.Second, "worker to take the first alert", func() bool { return len(tr.queue) == 0 })
	time.Sleep(50 * time.Millisecond)
	if code, _, _ := post(t, url, payload(a(1), a(2)), nil); code != 202 {
		t.Fatalf("filling the queue: %d", code)
	}
	code, body, hdr := post(t, url, payload(a(3)), nil)
	if code != 503 || hdr.Get("Retry-After") == "" || !strings.Contains(body, "queue full") {
		t.Fatalf("full queue: got %d %q, want 503 with Retry-After", code, body)
	}
	if got := testutil.ToFloat64(tr.metrics.queueDepth); got != 2 {
		t.Fatalf("queue depth %v, want 2", got)
	}
	close(exec.block)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(sctx); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if code, body, _ := post(t, url, payload(a(4)), nil); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("after shutdown: got %d %q, want 503", code, body)
	}
	resp, err := http.Get(tr.server.URL + "/-/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/-/ready while shutting down: %d", resp.StatusCode)
	}
	// Everything acknowledged before shutdown was handled: one restart
	// (the others are the same target within the cooldown).
	if n := len(exec.requests()); n != 1 {
		t.Fatalf("executor ran %d times, want 1", n)
	}
	if got := testutil.ToFloat64(tr.metrics.skipped.WithLabelValues(ReasonCooldown)); got != 2 {
		t.Fatalf("cooldown skips %v, want 2", got)
	}
}

func FuzzDecodeWebhook(f *testing.F) {
	f.Add(payload(firing("HighMemoryUsage", "0123abcd", time.Now(), map[string]string{"namespace": "ns"})))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"resolved","labels":{"alertname":"x"},"fingerprint":"a","startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4","alerts":null}`))
	f.Add([]byte(`{"version":4}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"version":"4","alerts":[{"startsAt":"not a time"}]}`))
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[],"truncatedAlerts":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := DecodeWebhook(body)
		if err != nil {
			return
		}
		if msg.Version != "4" {
			t.Fatalf("accepted version %q", msg.Version)
		}
		for _, a := range msg.Alerts {
			if a.Fingerprint == "" || a.StartsAt.IsZero() || a.Labels["alertname"] == "" {
				t.Fatalf("accepted incomplete alert %+v", a)
			}
		}
	})
}

// BenchmarkWebhookAck measures the time to authenticate, decode, queue and
// acknowledge one single-alert payload over loopback HTTP (the queue is
// drained by workers that find no matching rule).
func BenchmarkWebhookAck(b *testing.B) {
	tr := startRemediator(b, declinePolicy, fake.NewClientset(), &recordingExecutor{}, func(o *Options) {
		o.QueueSize = 100000
		o.Logger = discardLogger()
	})
	url := tr.server.URL + "/api/v1/alerts"
	body := payload(firing("Unmatched", "0123456789abcdef", time.Now(), map[string]string{"namespace": "rust-security", "pod": "auth-service-7d9f8b6c5d-x2x9q"}))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

func TestWebhookRefusesPayloadLargerThanTheQueuePermanently(t *testing.T) {
	exec := &recordingExecutor{}
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), exec, func(o *Options) { o.QueueSize = 3 })
	t0 := time.Now()
	var alerts []amtemplate.Alert
	for i := range 4 {
		alerts = append(alerts, firing("Unrelated", fmt.Sprintf("f%03d", i), t0, nil))
	}
	// The remediator is idle: waiting cannot make room, so a retryable
	// 503 would come back forever.
	code, body, _ := post(t, tr.server.URL+"/api/v1/alerts", payload(alerts...), nil)
	if code < 400 || code >= 500 || !strings.Contains(body, "max_alerts") {
		t.Fatalf("payload of 4 alerts with --queue.size 3: got %d %q, want a 4xx naming max_alerts", code, body)
	}
}

func TestWebhookLogsRefusedCredentialsAtMostOncePerInterval(t *testing.T) {
	tr := startRemediator(t, declinePolicy, fake.NewClientset(), &recordingExecutor{}, nil)
	body := payload(firing("HighMemoryUsage", "f1", time.Now(), nil))
	for range 50 {
		if code, _, _ := post(t, tr.server.URL+"/api/v1/alerts", body, map[string]string{"Authorization": "Bearer wrong"}); code != 401 {
			t.Fatalf("wrong token: %d, want 401", code)
		}
	}
	if got := testutil.ToFloat64(tr.metrics.webhookRequests.WithLabelValues("401")); got != 50 {
		t.Fatalf("401s counted %v, want 50", got)
	}
	// The interval is 10s; 50 loopback requests take far less, and even a
	// slow machine writes no more than a handful of lines for them.
	if n := logsOf(t).count("level=WARN"); n > 5 {
		t.Fatalf("%d WARN lines for 50 refused requests", n)
	}
}
