package exporter

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/warden-sre/warden/internal/testenv"
)

// Servers shared by every test in the package. Tests isolate themselves
// inside them (a fresh database, a fresh Redis db number or key prefix);
// tests that pause, kill or reconfigure a server start their own.
var (
	sharedPG    *testenv.Postgres
	sharedRedis *testenv.Redis
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	// Fuzz workers run only the fuzz target, which needs no servers;
	// starting them in every worker stalls the fuzzer.
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run()
	}
	var err error
	sharedPG, err = testenv.NewPostgres(testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "start shared postgres: %v\n", err)
		return 1
	}
	defer sharedPG.Stop()
	sharedRedis, err = testenv.NewRedis()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start shared redis: %v\n", err)
		return 1
	}
	defer sharedRedis.Stop()
	return m.Run()
}
