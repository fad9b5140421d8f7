package exporter

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// Servers for the inventory test, started only when it runs; the framework
// tests need none.
var (
	sharedPG = testenv.NewLazy(func() (*testenv.Postgres, error) {
		return testenv.NewPostgres(testenv.WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"))
	}, (*testenv.Postgres).Stop)
	sharedRedis = testenv.NewLazy(func() (*testenv.Redis, error) { return testenv.NewRedis() }, (*testenv.Redis).Stop)
	// bench200PG is a server with 200 databases (probe200_000 …) for
	// BenchmarkProbe200Databases.
	bench200PG = testenv.NewLazy(func() (*testenv.Postgres, error) {
		pg, err := testenv.NewPostgres(testenv.WithPostgresSetting("max_connections", "300"))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for i := range 200 {
			if err := pg.Exec(ctx, "postgres", fmt.Sprintf("CREATE DATABASE probe200_%03d", i)); err != nil {
				pg.Stop()
				return nil, err
			}
		}
		return pg, nil
	}, (*testenv.Postgres).Stop)
)

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, sharedPG, sharedRedis, bench200PG)) }
