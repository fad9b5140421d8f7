package reload

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/internal/testenv"
)

var testOptions = Options{
	Namespace:      "warden_test",
	Subject:        "configuration",
	SuccessfulHelp: "Whether the last reload succeeded.",
	TimestampHelp:  "When the last reload succeeded.",
}

// switchable returns a reload function that fails while *fail is set, and
// counts its calls.
func switchable(fail *atomic.Bool, calls *atomic.Int64) func() error {
	return func() error {
		calls.Add(1)
		if fail.Load() {
			return errors.New("config.yml: field adress not found")
		}
		return nil
	}
}

func TestGaugesFollowTheOutcome(t *testing.T) {
	var fail atomic.Bool
	var calls atomic.Int64
	r := New(testOptions, switchable(&fail, &calls))
	reg := prometheus.NewRegistry()
	reg.MustRegister(r)

	successful := func() float64 {
		return testutil.ToFloat64(r.successful)
	}
	if got := successful(); got != 0 {
		t.Fatalf("before any load: successful %v, want 0", got)
	}
	r.Loaded()
	if got := successful(); got != 1 {
		t.Fatalf("after Loaded: successful %v, want 1", got)
	}
	loadedAt := testutil.ToFloat64(r.timestamp)
	if now := float64(time.Now().Unix()); loadedAt < now-5 || loadedAt > now+5 {
		t.Fatalf("timestamp %v, want about %v", loadedAt, now)
	}

	fail.Store(true)
	if err := r.Reload(); err == nil {
		t.Fatal("Reload returned nil for a failing reload")
	}
	if got := successful(); got != 0 {
		t.Errorf("after a failed reload: successful %v, want 0", got)
	}
	if got := testutil.ToFloat64(r.timestamp); got != loadedAt {
		t.Errorf("a failed reload moved the timestamp from %v to %v", loadedAt, got)
	}

	fail.Store(false)
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := successful(); got != 1 {
		t.Errorf("after a successful reload: successful %v, want 1", got)
	}
	if calls.Load() != 2 {
		t.Errorf("reload function called %d times, want 2", calls.Load())
	}

	const want = `
# HELP warden_test_config_last_reload_successful Whether the last reload succeeded.
# TYPE warden_test_config_last_reload_successful gauge
warden_test_config_last_reload_successful 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "warden_test_config_last_reload_successful"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "warden_test_config_last_reload_success_timestamp_seconds"); err != nil || n != 1 {
		t.Errorf("timestamp gauge: %d series (err %v), want 1", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestReloadsRunOneAtATime(t *testing.T) {
	var running, overlaps atomic.Int64
	r := New(testOptions, func() error {
		if running.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
		return nil
	})
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			_ = r.Reload()
		}()
	}
	for range 8 {
		<-done
	}
	if overlaps.Load() != 0 {
		t.Errorf("%d reloads overlapped another", overlaps.Load())
	}
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		fail      bool
		wantCode  int
		wantBody  string
		wantAllow string
		wantCalls int64
		// reasonInLog sets Options.ReasonInLog.
		reasonInLog bool
	}{
		{name: "POST reloads", method: http.MethodPost, wantCode: http.StatusOK, wantBody: "Reloaded.\n", wantCalls: 1},
		{name: "PUT reloads", method: http.MethodPut, wantCode: http.StatusOK, wantBody: "Reloaded.\n", wantCalls: 1},
		{name: "failed reload names the reason", method: http.MethodPost, fail: true, wantCode: http.StatusInternalServerError,
			wantBody: "reload failed, previous configuration kept: config.yml: field adress not found\n", wantCalls: 1},
		{name: "failed reload keeps the reason in the log", method: http.MethodPost, fail: true, reasonInLog: true, wantCode: http.StatusInternalServerError,
			wantBody: "reload failed, previous configuration kept; the reason is in the log\n", wantCalls: 1},
		{name: "GET is refused", method: http.MethodGet, wantCode: http.StatusMethodNotAllowed,
			wantBody: "use POST to reload the configuration\n", wantAllow: "POST, PUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fail atomic.Bool
			var calls atomic.Int64
			fail.Store(tt.fail)
			opts := testOptions
			opts.ReasonInLog = tt.reasonInLog
			r := New(opts, switchable(&fail, &calls))
			rec := httptest.NewRecorder()
			r.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, "/-/reload", nil))
			body, _ := io.ReadAll(rec.Result().Body)
			if rec.Code != tt.wantCode || string(body) != tt.wantBody {
				t.Errorf("status %d body %q, want %d %q", rec.Code, body, tt.wantCode, tt.wantBody)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if calls.Load() != tt.wantCalls {
				t.Errorf("reload function called %d times, want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
}

func TestSIGHUPReloads(t *testing.T) {
	var fail atomic.Bool
	var calls atomic.Int64
	r := New(testOptions, switchable(&fail, &calls))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.HandleSIGHUP(ctx)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "a successful reload after SIGHUP", func() bool { return testutil.ToFloat64(r.successful) == 1 })
	if calls.Load() != 1 {
		t.Errorf("reload function called %d times after one SIGHUP, want 1", calls.Load())
	}
}
