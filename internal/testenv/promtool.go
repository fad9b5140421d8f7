package testenv

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Tool returns the path of one of the tools scripts/tools.sh builds
// (promtool, amtool, kustomize), from the environment variable env or PATH,
// failing the test with the command that builds it when it is missing.
// Under -short it skips the test: the fast loop runs without those tools.
func Tool(t testing.TB, name, env string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s (scripts/tools.sh); skipped with -short", name)
	}
	p, err := LookBinary(name, env, fmt.Sprintf("scripts/tools.sh %s, then eval \"$(scripts/tools.sh env)\" (make test does both)", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Promtool is Tool for promtool (PROMTOOL).
func Promtool(t testing.TB) string {
	t.Helper()
	return Tool(t, "promtool", "PROMTOOL")
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
