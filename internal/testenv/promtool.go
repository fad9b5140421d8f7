package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

const promtoolInstall = "build it with scripts/tools.sh promtool, then eval \"$(scripts/tools.sh env)\" (make test does both)"

// Promtool returns the path of promtool from PROMTOOL, failing the test
// with the command that builds it when it is unset or not executable.
func Promtool(t testing.TB) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		t.Fatalf("PROMTOOL is not set: %s", promtoolInstall)
	}
	if _, err := exec.LookPath(p); err != nil {
		t.Fatalf("PROMTOOL=%s is not an executable (%v): %s", p, err, promtoolInstall)
	}
	return p
}

// CheckMetrics runs `promtool check metrics` on an exposition in the text
// format and fails the test on any finding. what names the exposition in
// the failure message.
func CheckMetrics(t testing.TB, what, exposition string) {
	t.Helper()
	cmd := exec.Command(Promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics (%s): %v\n%s\n--- exposition ---\n%s", what, err, out, exposition)
	}
}

// Exposition gathers g and encodes the result in the text format.
func Exposition(t testing.TB, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	return buf.String()
}
