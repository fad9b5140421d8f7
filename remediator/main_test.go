package remediator

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

var (
	kubeOnce sync.Once
	kubeEnv  *testenv.Kube
	kubeErr  error
)

// sharedKube starts one API server for the package on first use, so the
// unit tests run without one.
func sharedKube(t testing.TB) *testenv.Kube {
	t.Helper()
	kubeOnce.Do(func() { kubeEnv, kubeErr = testenv.NewKube() })
	if kubeErr != nil {
		t.Fatal(kubeErr)
	}
	return kubeEnv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kubeEnv != nil {
		kubeEnv.Stop()
	}
	os.Exit(code)
}

type slogLogger = slog.Logger

// logBuffer collects a test's log lines; they are printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(substr string) int {
	return strings.Count(b.String(), substr)
}

var testLogs sync.Map // testing.TB -> *logBuffer

func newTestLogger(t testing.TB) *slog.Logger {
	v, loaded := testLogs.LoadOrStore(t, &logBuffer{})
	lb := v.(*logBuffer)
	if loaded {
		// Several remediators in one test share one log.
		return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Cleanup(func() {
		if t.Failed() {
			s := lb.String()
			if len(s) > 200000 {
				s = "...\n" + s[len(s)-200000:]
			}
			fmt.Fprintf(os.Stderr, "--- log of %s:\n%s", t.Name(), s)
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logsOf returns the log collected for t by startRemediator.
func logsOf(t testing.TB) *logBuffer {
	v, ok := testLogs.Load(t)
	if !ok {
		t.Fatal("no test logger")
	}
	return v.(*logBuffer)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
