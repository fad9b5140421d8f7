package authevents

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/testenv"
)

// TestAuthCollectorReportsFilesMatchedPerGlob: each configured glob has a
// warden_auth_files_matched series with the number of files it matched at
// the last poll, so a glob that matches nothing (logs moved, a typo) shows
// as 0 and can be alerted on.
func TestAuthCollectorReportsFilesMatchedPerGlob(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"auth.log", "auth.log.1"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	live, missing := filepath.Join(dir, "auth.log*"), filepath.Join(dir, "moved", "*.log")
	cfg := authTestConfig(t, fmt.Sprintf("auth:\n  files: [%q, %q]\n  poll_interval: 20ms\n", live, missing))
	c, err := New(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	pc := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
	want := fmt.Sprintf(`
# HELP warden_auth_files_matched Files each glob of auth.files matched at the last poll; 0 when the glob matches no file.
# TYPE warden_auth_files_matched gauge
warden_auth_files_matched{glob=%q} 2
warden_auth_files_matched{glob=%q} 0
`, live, missing)
	testenv.WaitFor(t, 30*time.Second, "files matched per glob", func() bool {
		return testutil.CollectAndCompare(pc, strings.NewReader(want), "warden_auth_files_matched") == nil
	})
}
