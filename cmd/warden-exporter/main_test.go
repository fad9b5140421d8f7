package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// builtBinary is warden-exporter built for the tests.
type builtBinary struct {
	path    string
	cleanup func()
}

// exporterBin is built by the first test that runs the binary; with
// -short those tests are skipped and nothing is built.
var exporterBin = testenv.NewLazy(func() (builtBinary, error) {
	path, cleanup, err := testenv.BuildBinary(".")
	return builtBinary{path: path, cleanup: cleanup}, err
}, func(b builtBinary) { b.cleanup() })

func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, exporterBin)) }

func TestConfigCheck(t *testing.T) {
	bin := exporterBin.Get(t).path
	dir := t.TempDir()
	pwFile := testenv.WriteFile(t, dir, "pw", "hunter2-secret\n")
	tests := []struct {
		name     string
		config   string
		wantCode int
		wantOut  []string
		notOut   []string
	}{
		{
			name:     "valid",
			config:   "postgres:\n  - name: main\n    dsn: postgres://warden@127.0.0.1:1/db\n    password: {file: " + pwFile + "}\nredis:\n  - name: cache\n    address: redis://127.0.0.1:1/0\n",
			wantCode: 0,
			wantOut:  []string{"configuration is valid"},
		},
		{
			name:     "unknown field",
			config:   "postgres:\n  - name: main\n    dsn: postgres://127.0.0.1:1/db\n    max_conections: 3\n",
			wantCode: 1,
			wantOut:  []string{"max_conections"},
		},
		{
			name:     "missing password file",
			config:   "postgres:\n  - name: main\n    dsn: postgres://127.0.0.1:1/db\n    password: {file: /nonexistent/pw}\n",
			wantCode: 1,
			wantOut:  []string{"postgres[0].password", "/nonexistent/pw"},
		},
		{
			name:     "bad dsn never shows its password",
			config:   "postgres:\n  - name: main\n    dsn: \"postgres://warden:hunter2-secret@127.0.0.1:notaport/db\"\n",
			wantCode: 1,
			wantOut:  []string{"postgres[0].dsn"},
			notOut:   []string{"hunter2-secret"},
		},
		{
			name:     "inline password never shown",
			config:   "postgres:\n  - name: main\n    dsn: postgres://warden@127.0.0.1:1/db\n    password: hunter2pw\n",
			wantCode: 1,
			wantOut:  []string{"line 4", "secret.Secret"},
			notOut:   []string{"hunter2pw"},
		},
		{
			name:     "password in the wrong place never shown",
			config:   "redis:\n  - name: cache\n    address: redis://127.0.0.1:1/0\n    pool_size: hunter2pw\n",
			wantCode: 1,
			wantOut:  []string{"line 4"},
			notOut:   []string{"hunter2pw"},
		},
		{
			name:     "duplicate target names",
			config:   "redis:\n  - name: a\n    address: redis://127.0.0.1:1\n  - name: a\n    address: redis://127.0.0.1:2\n",
			wantCode: 1,
			wantOut:  []string{"redis[1].name"},
		},
		{
			name:     "empty file",
			config:   "",
			wantCode: 1,
			wantOut:  []string{"no collectors configured"},
		},
		{
			name:     "comment-only file",
			config:   "# targets go here\n",
			wantCode: 1,
			wantOut:  []string{"no collectors configured"},
		},
		{
			name:     "not yaml",
			config:   "postgres: [\n",
			wantCode: 1,
			wantOut:  []string{"parse config"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testenv.WriteFile(t, t.TempDir(), "config.yml", tt.config)
			code, out := testenv.RunBinary(t, 30*time.Second, bin, "--config.file="+cfg, "--config.check")
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.wantOut {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
			for _, n := range tt.notOut {
				if bytes.Contains(out, []byte(n)) {
					t.Errorf("output reveals %q:\n%s", n, out)
				}
			}
		})
	}
}

// exporterProc is a running warden-exporter.
type exporterProc struct{ *testenv.Binary }

func startExporter(t *testing.T, configPath string) *exporterProc {
	t.Helper()
	return &exporterProc{testenv.StartBinary(t, exporterBin.Get(t).path, "--config.file="+configPath, "--log.level=debug")}
}

func (p *exporterProc) scrape(t *testing.T, timeoutHeader string) (string, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/metrics", nil)
	if timeoutHeader != "" {
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeoutHeader)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape status %d:\n%s", resp.StatusCode, b)
	}
	return string(b), time.Since(start)
}

func (p *exporterProc) reload(t *testing.T) int {
	t.Helper()
	resp, err := http.Post(p.URL+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func requireLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !testenv.ContainsLine(body, l) {
			t.Errorf("metrics lack %q", l)
		}
	}
}

func TestReloadKeepsPreviousConfigWhenNewOneIsInvalid(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	redis := testenv.StartRedis(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yml")
	good := func(name string) string {
		return fmt.Sprintf("redis:\n  - name: %s\n    address: redis://%s/0\n", name, redis.Addr)
	}
	testenv.WriteFile(t, filepath.Dir(cfgPath), "config.yml", good("first"))
	exp := startExporter(t, cfgPath)

	body, _ := exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="first"} 1`, "warden_exporter_config_last_reload_successful 1")

	// Invalid file via SIGHUP: rejected, old targets still served.
	testenv.WriteFile(t, filepath.Dir(cfgPath), "config.yml", "redis:\n  - name: first\n    adress: typo\n")
	if err := exp.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "failed reload to be reported", func() bool {
		body, _ := exp.scrape(t, "")
		return testenv.ContainsLine(body, "warden_exporter_config_last_reload_successful 0")
	})
	body, _ = exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="first"} 1`)

	// Invalid file via the HTTP endpoint: 500, old config kept.
	if code := exp.reload(t); code != http.StatusInternalServerError {
		t.Fatalf("POST /-/reload with invalid file: status %d, want 500", code)
	}
	// Empty and comment-only files: rejected, the targets stay.
	for _, empty := range []string{"", "# emptied by mistake\n"} {
		testenv.WriteFile(t, filepath.Dir(cfgPath), "config.yml", empty)
		if code := exp.reload(t); code != http.StatusInternalServerError {
			t.Fatalf("POST /-/reload with file %q: status %d, want 500", empty, code)
		}
		body, _ = exp.scrape(t, "")
		requireLines(t, body, `redis_up{target="first"} 1`, "warden_exporter_config_last_reload_successful 0")
	}
	// Valid file: applied.
	testenv.WriteFile(t, filepath.Dir(cfgPath), "config.yml", good("second"))
	if code := exp.reload(t); code != http.StatusOK {
		t.Fatalf("POST /-/reload with valid file: status %d, want 200", code)
	}
	body, _ = exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="second"} 1`, "warden_exporter_config_last_reload_successful 1")
	if testenv.ContainsLine(body, `redis_up{target="first"}`) {
		t.Error("old target still scraped after a successful reload")
	}
	if resp, err := http.Get(exp.URL + "/-/reload"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /-/reload: status %d, want 405", resp.StatusCode)
		}
	}
}

func TestScrapeSurvivesHungPostgresAndKilledRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	pg := testenv.StartPostgres(t)
	redis := testenv.StartRedis(t)
	cfg := testenv.WriteFile(t, t.TempDir(), "config.yml", fmt.Sprintf(
		"postgres:\n  - name: db\n    dsn: %s\nredis:\n  - name: cache\n    address: redis://%s/0\n", pg.DSN("postgres"), redis.Addr))
	exp := startExporter(t, cfg)

	body, _ := exp.scrape(t, "2")
	requireLines(t, body, `pg_up{target="db"} 1`, `redis_up{target="cache"} 1`)

	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	body, took := exp.scrape(t, "2")
	if took > 2500*time.Millisecond {
		t.Errorf("scrape with hung PostgreSQL took %s, want within the 2s header deadline", took)
	}
	requireLines(t, body,
		`warden_exporter_collector_success{collector="postgres/db"} 0`,
		`pg_up{target="db"} 0`,
		`redis_up{target="cache"} 1`,
		`redis_memory_used_bytes{target="cache"}`,
		`redis_connected_clients{target="cache"}`,
		`warden_exporter_collector_success{collector="redis/cache"} 1`,
	)
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "pg_up 1 after SIGCONT", func() bool {
		body, _ := exp.scrape(t, "2")
		return testenv.ContainsLine(body, `pg_up{target="db"} 1`)
	})

	redis.Kill()
	body, took = exp.scrape(t, "2")
	if took > 2500*time.Millisecond {
		t.Errorf("scrape with dead Redis took %s", took)
	}
	requireLines(t, body, `redis_up{target="cache"} 0`, `pg_up{target="db"} 1`, `pg_stat_database_numbackends{`)
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "redis_up 1 after restart", func() bool {
		body, _ := exp.scrape(t, "2")
		return testenv.ContainsLine(body, `redis_up{target="cache"} 1`)
	})
}

func TestMetricsOutputPassesPromtoolLint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	testenv.Promtool(t)
	pg := testenv.StartPostgres(t)
	redis := testenv.StartRedis(t)
	cfg := testenv.WriteFile(t, t.TempDir(), "config.yml", fmt.Sprintf(
		"postgres:\n  - name: db\n    dsn: %s\nredis:\n  - name: cache\n    address: redis://%s/0\n", pg.DSN("postgres"), redis.Addr))
	exp := startExporter(t, cfg)
	body, _ := exp.scrape(t, "")
	testenv.CheckMetrics(t, "warden-exporter /metrics", body)
}

func TestConcurrentScrapesAreServed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	redis := testenv.StartRedis(t)
	cfg := testenv.WriteFile(t, t.TempDir(), "config.yml", fmt.Sprintf("redis:\n  - name: cache\n    address: redis://%s/0\n", redis.Addr))
	exp := startExporter(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(exp.URL + "/metrics")
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !testenv.ContainsLine(string(b), `redis_up{target="cache"} 1`) {
				errs <- "scrape without redis_up 1"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestReloadErrorNeverShowsInlinePassword: a password written inline is
// rejected on reload without appearing in the HTTP answer or the log.
func TestReloadErrorNeverShowsInlinePassword(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	redis := testenv.StartRedis(t)
	dir := t.TempDir()
	target := fmt.Sprintf("redis:\n  - name: cache\n    address: redis://%s/0\n", redis.Addr)
	cfgPath := testenv.WriteFile(t, dir, "config.yml", target)
	exp := startExporter(t, cfgPath)

	for _, bad := range []string{"    password: hunter2pw\n", "    password: {hunter2pw}\n", "    pool_size: hunter2pw\n"} {
		testenv.WriteFile(t, dir, "config.yml", target+bad)
		resp, err := http.Post(exp.URL+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("%q: status %d, want 500", bad, resp.StatusCode)
		}
		if !bytes.Contains(body, []byte("line 4")) {
			t.Errorf("%q: answer does not say where: %s", bad, body)
		}
		if bytes.Contains(body, []byte("hunter2pw")) {
			t.Errorf("%q: answer reveals the password: %s", bad, body)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "reload failures to be logged", func() bool {
		return strings.Count(exp.Output(), "configuration reload failed") >= 3
	})
	if strings.Contains(exp.Output(), "hunter2pw") {
		t.Errorf("log reveals the password:\n%s", exp.Output())
	}
}
