package authsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warden-sre/warden/internal/testenv"
)

// syncBuffer is a log destination safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func startSim(t *testing.T, cfg Config) (*Sim, *httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Log = logs
	if cfg.InstanceID == "" {
		cfg.InstanceID = "test-1"
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler()) // a real listener on 127.0.0.1
	t.Cleanup(srv.Close)
	return s, srv, logs
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics and returns the parsed families.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := do(t, "GET", base+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

func counterValue(mfs map[string]*dto.MetricFamily, name, label, value string) float64 {
	for _, m := range mfs[name].GetMetric() {
		match := label == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				match = true
			}
		}
		if match {
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func TestFaultSwitchesSetGetResetAndReject(t *testing.T) {
	_, srv, _ := startSim(t, Config{Fault: Fault{ErrorRate: 0.1}})
	code, body := do(t, "POST", srv.URL+"/admin/fault", `{"latency":"300ms","brute_force":{"sources":["203.0.113.7"],"rate":50},"unhealthy":true}`)
	if code != http.StatusOK {
		t.Fatalf("POST /admin/fault: %d %s", code, body)
	}
	code, body = do(t, "GET", srv.URL+"/admin/fault", "")
	var got Fault
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK {
		t.Fatalf("GET /admin/fault: %d %s %v", code, body, err)
	}
	// Fields left out of the POST keep their value (error_rate).
	if got.ErrorRate != 0.1 || time.Duration(got.Latency) != 300*time.Millisecond || !got.Unhealthy ||
		got.BruteForce.Rate != 50 || len(got.BruteForce.Sources) != 1 || got.BruteForce.Sources[0] != "203.0.113.7" {
		t.Fatalf("fault state = %+v (%s)", got, body)
	}
	if !strings.Contains(body, `"latency":"300ms"`) {
		t.Errorf("latency not written as a duration string: %s", body)
	}

	for _, bad := range []struct{ body, want string }{
		{`{"error_rate":1.5}`, "error_rate: must be between 0 and 1"},
		{`{"latency":"soon"}`, "invalid fault JSON"},
		{`{"latency":"2h"}`, "latency: must be between"},
		{`{"memory_mb":100000}`, "memory_mb: must be between"},
		{`{"brute_force":{"sources":["not-an-ip"],"rate":5}}`, "brute_force.sources[0]"},
		{`{"brute_force":{"sources":[],"rate":5}}`, "brute_force.sources: required"},
		{`{"surprise":true}`, "unknown field"},
		{`not json`, "invalid fault JSON"},
	} {
		code, body := do(t, "POST", srv.URL+"/admin/fault", bad.body)
		if code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("POST %s: %d %s, want 400 containing %q", bad.body, code, body, bad.want)
		}
	}
	// Rejected posts change nothing.
	if _, body := do(t, "GET", srv.URL+"/admin/fault", ""); !strings.Contains(body, `"error_rate":0.1`) {
		t.Errorf("state changed by a rejected post: %s", body)
	}

	code, body = do(t, "POST", srv.URL+"/admin/reset", "")
	if code != http.StatusOK {
		t.Fatalf("reset: %d", code)
	}
	got = Fault{}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.ErrorRate != 0 || got.Latency != 0 || got.Unhealthy || got.BruteForce.Rate != 0 {
		t.Fatalf("after reset: %s", body)
	}
}

func TestHealthFollowsUnhealthySwitch(t *testing.T) {
	_, srv, _ := startSim(t, Config{InstanceID: "copy-7", Fault: Fault{Unhealthy: true}})
	if code, body := do(t, "GET", srv.URL+"/health", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "copy-7") {
		t.Fatalf("/health while unhealthy: %d %s", code, body)
	}
	do(t, "POST", srv.URL+"/admin/fault", `{"unhealthy":false}`)
	if code, body := do(t, "GET", srv.URL+"/health", ""); code != http.StatusOK || !strings.Contains(body, `"healthy"`) {
		t.Fatalf("/health after switch: %d %s", code, body)
	}
}

func TestErrorRateAndLatencyOnRealLogins(t *testing.T) {
	_, srv, logs := startSim(t, Config{})
	login := func(password string) int {
		code, _ := do(t, "POST", srv.URL+"/api/v1/auth/login", `{"user_id":"alice","password":"`+password+`"}`)
		return code
	}
	if code := login("secret"); code != http.StatusOK {
		t.Fatalf("good login: %d", code)
	}
	if code := login("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("bad password: %d", code)
	}
	do(t, "POST", srv.URL+"/admin/fault", `{"error_rate":1}`)
	for range 3 {
		if code := login("secret"); code != http.StatusInternalServerError {
			t.Fatalf("with error_rate 1: %d", code)
		}
	}
	do(t, "POST", srv.URL+"/admin/fault", `{"error_rate":0,"latency":"250ms"}`)
	start := time.Now()
	if code := login("secret"); code != http.StatusOK {
		t.Fatalf("slow login: %d", code)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("login with latency 250ms took %v", d)
	}

	mfs := scrape(t, srv.URL)
	for status, want := range map[string]float64{"200": 2, "401": 1, "500": 3} {
		if got := counterValue(mfs, "auth_requests_total", "status", status); got != want {
			t.Errorf("auth_requests_total{status=%q} = %v, want %v", status, got, want)
		}
	}
	if got := counterValue(mfs, "auth_failed_logins_total", "", ""); got != 1 {
		t.Errorf("auth_failed_logins_total = %v, want 1", got)
	}
	if got := counterValue(mfs, "jwt_tokens_issued_total", "", ""); got != 2 {
		t.Errorf("jwt_tokens_issued_total = %v, want 2", got)
	}
	if got := counterValue(mfs, "auth_active_sessions", "", ""); got != 2 {
		t.Errorf("auth_active_sessions = %v, want 2", got)
	}
	h := mfs["auth_request_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 6 {
		t.Errorf("duration histogram count = %d, want 6", h.GetSampleCount())
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 0.1 && b.GetCumulativeCount() != 5 {
			t.Errorf("requests under 100ms = %d, want 5 (one delayed by 250ms)", b.GetCumulativeCount())
		}
	}
	// The failed login is logged with its source address.
	var failed int
	for _, l := range logs.lines(t) {
		if l["event"] == "authentication_failed" && l["ip_address"] == "127.0.0.1" && l["user_id"] == "alice" {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("authentication_failed lines from 127.0.0.1 = %d, want 1", failed)
	}
}

// TestBruteForceAmongNormalTraffic generates one second of traffic and
// checks the counts exactly: 1000 normal requests, and 50 failed logins from
// the attacking sources, each logged with every contract field.
func TestBruteForceAmongNormalTraffic(t *testing.T) {
	s, srv, logs := startSim(t, Config{Rate: 1000})
	sources := []string{"203.0.113.7", "203.0.113.8"}
	if code, body := do(t, "POST", srv.URL+"/admin/fault", `{"brute_force":{"sources":["203.0.113.7","203.0.113.8"],"rate":50}}`); code != http.StatusOK {
		t.Fatalf("set brute force: %d %s", code, body)
	}
	s.Generate(time.Second)

	lines := logs.lines(t)
	fromAttack, failedTotal, normalSources := 0, 0, map[string]bool{}
	for _, l := range lines {
		for _, field := range []string{"timestamp", "level", "event", "ip_address", "user_id", "action", "resource", "risk_score"} {
			if _, ok := l[field]; !ok {
				t.Fatalf("log line without %s: %v", field, l)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, l["timestamp"].(string)); err != nil {
			t.Fatalf("timestamp: %v", err)
		}
		ip := l["ip_address"].(string)
		isAttack := ip == sources[0] || ip == sources[1]
		if l["event"] == "authentication_failed" {
			failedTotal++
			if isAttack {
				fromAttack++
			}
		}
		if !isAttack {
			normalSources[ip] = true
		}
	}
	if fromAttack != 50 {
		t.Errorf("failed logins from the attackers = %d, want 50", fromAttack)
	}
	if len(normalSources) < 500 {
		t.Errorf("normal traffic came from only %d sources", len(normalSources))
	}
	mfs := scrape(t, srv.URL)
	if got := counterValue(mfs, "auth_failed_logins_total", "", ""); got != float64(failedTotal) {
		t.Errorf("auth_failed_logins_total = %v, log has %d", got, failedTotal)
	}
	var requests float64
	for _, m := range mfs["auth_requests_total"].GetMetric() {
		requests += m.GetCounter().GetValue()
	}
	if requests != 1050 {
		t.Errorf("requests = %v, want 1050", requests)
	}
}

func TestMemorySwitchHoldsAndReleases(t *testing.T) {
	s, srv, _ := startSim(t, Config{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if code, body := do(t, "POST", srv.URL+"/admin/fault", `{"memory_mb":64}`); code != http.StatusOK {
		t.Fatalf("set memory: %d %s", code, body)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s.HeldMemoryBytes() != 64<<20 || after.HeapAlloc-before.HeapAlloc < 60<<20 {
		t.Fatalf("held %d bytes, heap grew by %d", s.HeldMemoryBytes(), after.HeapAlloc-before.HeapAlloc)
	}
	do(t, "POST", srv.URL+"/admin/fault", `{"memory_mb":0}`)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s.HeldMemoryBytes() != 0 || after.HeapAlloc > before.HeapAlloc+8<<20 {
		t.Fatalf("after release: held %d, heap %d (was %d)", s.HeldMemoryBytes(), after.HeapAlloc, before.HeapAlloc)
	}
}

func TestMetricsFollowTheContractAndLint(t *testing.T) {
	s, srv, _ := startSim(t, Config{Rate: 100})
	s.Generate(time.Second)
	mfs := scrape(t, srv.URL)
	for name, typ := range map[string]dto.MetricType{
		"auth_requests_total":              dto.MetricType_COUNTER,
		"auth_request_duration_seconds":    dto.MetricType_HISTOGRAM,
		"auth_active_sessions":             dto.MetricType_GAUGE,
		"auth_jwt_validation_errors_total": dto.MetricType_COUNTER,
		"jwt_tokens_issued_total":          dto.MetricType_COUNTER,
		"auth_failed_logins_total":         dto.MetricType_COUNTER,
		"authsim_instance_info":            dto.MetricType_GAUGE,
	} {
		if mf, ok := mfs[name]; !ok || mf.GetType() != typ {
			t.Errorf("metric %s missing or not a %v", name, typ)
		}
	}
	problems, err := testutil.GatherAndLint(s.Registry())
	if err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestRunGeneratesTrafficUntilCancelled(t *testing.T) {
	s, _, logs := startSim(t, Config{Rate: 200})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	testenv.WaitFor(t, time.Minute, "20 lines of generated traffic", func() bool { return len(logs.lines(t)) >= 20 })
	cancel()
	<-done
}

func TestNewRejectsBadSettings(t *testing.T) {
	for _, cfg := range []Config{
		{Rate: -1},
		{Rate: 2 * MaxRate},
		{Fault: Fault{ErrorRate: -0.1}},
		{Fault: Fault{BruteForce: BruteForce{Rate: 1}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
