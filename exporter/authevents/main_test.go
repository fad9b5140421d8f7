package authevents

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// sharedPG serves the auth database queries, started by the first test
// that needs it; each test creates its own database.
var sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) { return testenv.NewPostgres() }, (*testenv.Postgres).Stop)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedPG)) }
