package authevents

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/testenv"
)

// TestAuthCollectorCountsEveryLineOnceAcrossNumberedRotation writes failed
// logins at a high rate into a file rotated logrotate-style (auth.log.3 ->
// .4, .2 -> .3, .1 -> .2, auth.log -> auth.log.1, the oldest removed) and
// follows it with a glob that matches the rotated names too: the counter
// ends equal to the number of lines written, no more, no less.
//
// By default it runs 10 s with a rotation every 2 s; WARDEN_SOAK=1 runs the
// full 60 s with a rotation every 10 s. The writer is throttled (it never
// writes more than one batch per tick), and the test waits for the follower
// to catch up, so a slow machine writes fewer lines but the equality holds.
func TestAuthCollectorCountsEveryLineOnceAcrossNumberedRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; skipped with -short")
	}
	duration, every := 10*time.Second, 2*time.Second
	if v, _ := strconv.ParseBool(os.Getenv("WARDEN_SOAK")); v {
		duration, every = 60*time.Second, 10*time.Second
	}
	const linesPerSecond = 20000
	const tick = 10 * time.Millisecond

	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := authTestConfig(t, fmt.Sprintf("auth:\n  files: [%q]\n  from_beginning: true\n  poll_interval: 50ms\n", path+"*"))
	c, err := New(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// A few distinct lines, so the writer spends its time writing.
	var batch strings.Builder
	for i := range linesPerSecond * int(tick) / int(time.Second) {
		batch.WriteString(authJSONLine("authentication_failed", fmt.Sprintf("203.0.113.%d", i%50)))
	}
	perTick := linesPerSecond * int(tick) / int(time.Second)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	written, rotations := 0, 0
	start, lastRotation := time.Now(), time.Now()
	ticker := time.NewTicker(tick)
	for time.Since(start) < duration {
		<-ticker.C
		if _, err := f.WriteString(batch.String()); err != nil {
			t.Fatal(err)
		}
		written += perTick
		if time.Since(lastRotation) >= every {
			rotateNumberedLog(t, path, 4)
			// The application writes to the renamed file until it
			// reopens.
			if _, err := f.WriteString(batch.String()); err != nil {
				t.Fatal(err)
			}
			written += perTick
			_ = f.Close()
			if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
				t.Fatal(err)
			}
			rotations++
			lastRotation = time.Now()
		}
	}
	ticker.Stop()
	_ = f.Close()
	// One more rotation after the last line: renaming fully read files
	// must not read them again.
	rotateNumberedLog(t, path, 4)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d lines in %s with %d rotations", written, time.Since(start).Round(time.Millisecond), rotations+1)

	testenv.WaitFor(t, 5*time.Minute, fmt.Sprintf("%d failed logins counted", written), func() bool {
		return failuresCounted(t, c) >= float64(written)
	})
	// Let the follower poll a few more times: a re-read would show now.
	time.Sleep(20 * cfg.PollInterval)
	if got := failuresCounted(t, c); got != float64(written) {
		t.Fatalf("warden_auth_login_failures_total = %v, want %d (lines written)", got, written)
	}
	if _, total := c.failures.Top(c.now()); total != uint64(written) {
		t.Fatalf("failed logins in the by-source window = %d, want %d", total, written)
	}
}

// failuresCounted reads warden_auth_login_failures_total as a scrape does.
func failuresCounted(t *testing.T, c *Collector) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(&exportertest.Adapter{C: c, Timeout: 5 * time.Second})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "warden_auth_login_failures_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no warden_auth_login_failures_total")
	return 0
}

// rotateNumberedLog rotates path as logrotate does with numbered files and
// "rotate keep": path.keep is removed, path.N becomes path.N+1 and path
// becomes path.1.
func rotateNumberedLog(t *testing.T, path string, keep int) {
	t.Helper()
	_ = os.Remove(fmt.Sprintf("%s.%d", path, keep))
	for n := keep - 1; n >= 1; n-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", path, n), fmt.Sprintf("%s.%d", path, n+1))
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
}
