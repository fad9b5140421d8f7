package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Backfill turns an OpenMetrics exposition with timestamps (a history of
// samples, ending in "# EOF") into TSDB blocks with `promtool tsdb
// create-blocks-from openmetrics`, and returns the data directory, removed
// after the test. Start a Prometheus on it with StartPrometheusOnData.
func Backfill(t testing.TB, openMetrics []byte) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs promtool and a real Prometheus; skipped with -short")
	}
	promtool := Promtool(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "history.om.txt")
	if err := os.WriteFile(in, openMetrics, 0o644); err != nil {
		t.Fatalf("write history: %v", err)
	}
	data := filepath.Join(dir, "data")
	// Blocks of up to 31 days instead of the default two hours: a month
	// of history is then two blocks written in a second, not 370 written
	// in most of a minute. The flag is hidden in promtool's help.
	cmd := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration=744h", in, data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	return data
}

// StartPrometheusOnData starts Prometheus without scrape jobs on an
// existing TSDB directory (from Backfill), with a retention long enough to
// keep every block however old, and stops it after the test. The data
// directory is left to its owner.
func StartPrometheusOnData(t testing.TB, dataDir string) *Prometheus {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real Prometheus; skipped with -short")
	}
	return StartPrometheus(t, PrometheusConfig{StorageArgs: []string{
		"--storage.tsdb.path=" + dataDir,
		// Retention counts back from the newest block, so a backfilled
		// history of any age stays as long as it spans less than this.
		"--storage.tsdb.retention.time=10y",
	}})
}
