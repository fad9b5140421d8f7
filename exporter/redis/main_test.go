package redis

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// sharedRedis is the server the package's tests share, started by the first
// test that needs it; tests isolate themselves in their own db number, and
// tests that pause, kill or reconfigure a server start their own.
var sharedRedis = testenv.NewLazy(func() (*testenv.Redis, error) { return testenv.NewRedis() }, (*testenv.Redis).Stop)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedRedis)) }
