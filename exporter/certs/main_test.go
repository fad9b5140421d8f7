package certs

import (
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// sharedPG is a plain (ssl = off) PostgreSQL for the SSLRequest tests,
// started by the first test that needs it.
var sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) { return testenv.NewPostgres() }, (*testenv.Postgres).Stop)

func TestMain(m *testing.M) {
	// The test binary doubles as the TLS servers of the CPU benchmark,
	// so that the benchmark's own CPU time holds only the probing side.
	if os.Getenv(certsServeEnv) != "" {
		os.Exit(certsServeProcess())
	}
	os.Exit(testenv.RunAndStop(m, sharedPG))
}
