package actions

import (
	"fmt"
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// kube is one API server for the package; each test works in its own
// namespace. kubeErr says why it is missing, and tests that need it fail with
// that message (unit tests still run).
var (
	kube    *testenv.Kube
	kubeErr error
)

func TestMain(m *testing.M) {
	kube, kubeErr = testenv.NewKube()
	if kubeErr != nil {
		fmt.Fprintln(os.Stderr, "kube-apiserver unavailable, API-server tests will fail:", kubeErr)
	}
	code := m.Run()
	if kube != nil {
		kube.Stop()
	}
	os.Exit(code)
}

func needKube(t testing.TB) *testenv.Kube {
	t.Helper()
	if kube == nil {
		t.Fatalf("this test needs a real kube-apiserver: %v", kubeErr)
	}
	return kube
}
