package exporter

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// Servers for the inventory test, started only when it runs; the framework
// tests need none.
var (
	sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) {
		return testenv.NewPostgres(testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"))
	}, (*testenv.Postgres).Stop)
	sharedRedis = testenv.NewLazy(func() (*testenv.Redis, error) { return testenv.NewRedis() }, (*testenv.Redis).Stop)
)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedPG, sharedRedis)) }
