package certs

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// sharedPG is a plain (ssl = off) PostgreSQL for the SSLRequest tests,
// started by the first test that needs it.
var sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) { return testenv.NewPostgres() }, (*testenv.Postgres).Stop)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedPG)) }
