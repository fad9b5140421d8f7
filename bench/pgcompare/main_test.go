package main

import (
	"testing"
	"time"

	"github.com/warden-sre/warden/exporter"
)

func TestParseScrape(t *testing.T) {
	head := "# HELP pg_stat_user_tables_n_live_tup Live rows.\n# TYPE pg_stat_user_tables_n_live_tup gauge\n"
	for _, tc := range []struct {
		name, body string
		want       scrapeStats
		wantErr    bool
	}{
		{"postgres_exporter style", head +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="t001",schemaname="public"} 100` + "\n" +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="t002",schemaname="public"} 100` + "\n" +
			"# TYPE pg_up gauge\npg_up 1\n",
			scrapeStats{series: 3, tableSeries: 2, tables: 2}, false},
		{"warden style with other and a second family", head +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="t001",schemaname="public",target="main"} 100` + "\n" +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="other",schemaname="",target="main"} 5` + "\n" +
			"# TYPE pg_stat_user_tables_size_bytes gauge\n" +
			`pg_stat_user_tables_size_bytes{datname="db",relname="t001",schemaname="public",target="main"} 8192` + "\n",
			scrapeStats{series: 3, tableSeries: 2, tables: 1}, false},
		{"same name in two schemas, another database", head +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="t001",schemaname="public"} 1` + "\n" +
			`pg_stat_user_tables_n_live_tup{datname="db",relname="t001",schemaname="audit"} 1` + "\n" +
			`pg_stat_user_tables_n_live_tup{datname="other_db",relname="t002",schemaname="public"} 1` + "\n",
			scrapeStats{series: 3, tableSeries: 2, tables: 2}, false},
		{"statio is not stat_user_tables", "# TYPE pg_statio_user_tables_heap_blocks_read counter\n" +
			`pg_statio_user_tables_heap_blocks_read{datname="db",relname="t001",schemaname="public"} 1` + "\n",
			scrapeStats{series: 1}, false},
		{"empty", "", scrapeStats{}, false},
		{"malformed", "pg_up{ 1\n", scrapeStats{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScrape([]byte(tc.body), "db")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ten := make([]time.Duration, 10)
	for i := range ten {
		ten[i] = time.Duration(10-i) * time.Millisecond // descending: percentile sorts
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"none", nil, 0.5, 0},
		{"one", []time.Duration{3}, 0.9, 3},
		{"p50 of ten", ten, 0.5, 5 * time.Millisecond},
		{"p90 of ten", ten, 0.9, 9 * time.Millisecond},
		{"p100 of ten", ten, 1, 10 * time.Millisecond},
		{"tiny p is the smallest", ten, 0.001, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.ds, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
	if ten[0] != 10*time.Millisecond {
		t.Error("percentile sorted its argument in place")
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b float64
		want string
	}{{1, 4, "0.25×"}, {3, 1, "3.00×"}, {1, 0, "n/a"}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestWardenConfigReportsEveryTable(t *testing.T) {
	dsn := `postgres://postgres@127.0.0.1:5432/bench_tables_200?sslmode=disable&application_name=a"b`
	cfg, err := exporter.ParseConfig([]byte(wardenConfig(dsn)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Postgres) != 1 || cfg.Postgres[0].DSN != dsn || !cfg.Postgres[0].Tables.All {
		t.Errorf("configuration %+v, want one target on %q with tables.all", cfg.Postgres, dsn)
	}
}
