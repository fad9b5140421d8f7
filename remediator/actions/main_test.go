package actions

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// kubeServer is one API server for the package, started by the first test
// that needs it; each test works in its own namespace. With -short it does
// not start and those tests are skipped.
var kubeServer = testenv.NewLazy(func() (*testenv.Kube, error) { return testenv.NewKube() }, (*testenv.Kube).Stop)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, kubeServer)) }

// startRedis starts a Redis server of the test's own: the flush tests
// stop it or start it with their own settings. It is skipped with -short,
// like every test that needs a real server.
func startRedis(t *testing.T, opts ...testenv.RedisOption) *testenv.Redis {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real server; skipped with -short")
	}
	return testenv.StartRedis(t, opts...)
}
