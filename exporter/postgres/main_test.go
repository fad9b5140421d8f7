package postgres

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// sharedPG is the server the package's tests share, started by the first test
// that needs it; tests isolate themselves in a fresh database, and tests
// that pause or kill a server start their own.
var sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) {
	return testenv.NewPostgres(testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"))
}, (*testenv.Postgres).Stop)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedPG)) }
