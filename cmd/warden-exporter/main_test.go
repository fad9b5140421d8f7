package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

var exporterBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warden-exporter-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exporterBin = filepath.Join(dir, "warden-exporter")
	if out, err := exec.Command("go", "build", "-o", exporterBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build warden-exporter: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	pwFile := writeFile(t, dir, "pw", "hunter2-secret\n")
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
			name:     "duplicate target names",
			config:   "redis:\n  - name: a\n    address: redis://127.0.0.1:1\n  - name: a\n    address: redis://127.0.0.1:2\n",
			wantCode: 1,
			wantOut:  []string{"redis[1].name"},
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
			cfg := writeFile(t, t.TempDir(), "config.yml", tt.config)
			cmd := exec.Command(exporterBin, "--config.file="+cfg, "--config.check")
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tt.wantCode {
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
type exporterProc struct {
	url    string
	cmd    *exec.Cmd
	output *bytes.Buffer
}

func startExporter(t *testing.T, configPath string) *exporterProc {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var out bytes.Buffer
	cmd := exec.Command(exporterBin, "--config.file="+configPath, "--web.listen-address="+addr, "--log.level=debug")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &exporterProc{url: "http://" + addr, cmd: cmd, output: &out}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("exporter output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("exporter did not become ready:\n%s", out.String())
	return nil
}

func (p *exporterProc) scrape(t *testing.T, timeoutHeader string) (string, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.url+"/metrics", nil)
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
	resp, err := http.Post(p.url+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func requireLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !containsLine(body, l) {
			t.Errorf("metrics lack %q", l)
		}
	}
}

func containsLine(body, prefix string) bool {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestReloadKeepsPreviousConfigWhenNewOneIsInvalid(t *testing.T) {
	redis := testenv.StartRedis(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yml")
	good := func(name string) string {
		return fmt.Sprintf("redis:\n  - name: %s\n    address: redis://%s/0\n", name, redis.Addr)
	}
	writeFile(t, filepath.Dir(cfgPath), "config.yml", good("first"))
	exp := startExporter(t, cfgPath)

	body, _ := exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="first"} 1`, "warden_exporter_config_last_reload_successful 1")

	// Invalid file via SIGHUP: rejected, old targets still served.
	writeFile(t, filepath.Dir(cfgPath), "config.yml", "redis:\n  - name: first\n    adress: typo\n")
	if err := exp.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failed reload to be reported", func() bool {
		body, _ := exp.scrape(t, "")
		return containsLine(body, "warden_exporter_config_last_reload_successful 0")
	})
	body, _ = exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="first"} 1`)

	// Invalid file via the HTTP endpoint: 500, old config kept.
	if code := exp.reload(t); code != http.StatusInternalServerError {
		t.Fatalf("POST /-/reload with invalid file: status %d, want 500", code)
	}
	// Valid file: applied.
	writeFile(t, filepath.Dir(cfgPath), "config.yml", good("second"))
	if code := exp.reload(t); code != http.StatusOK {
		t.Fatalf("POST /-/reload with valid file: status %d, want 200", code)
	}
	body, _ = exp.scrape(t, "")
	requireLines(t, body, `redis_up{target="second"} 1`, "warden_exporter_config_last_reload_successful 1")
	if containsLine(body, `redis_up{target="first"}`) {
		t.Error("old target still scraped after a successful reload")
	}
	if resp, err := http.Get(exp.url + "/-/reload"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /-/reload: status %d, want 405", resp.StatusCode)
		}
	}
}

func TestScrapeSurvivesHungPostgresAndKilledRedis(t *testing.T) {
	pg := testenv.StartPostgres(t)
	redis := testenv.StartRedis(t)
	cfg := writeFile(t, t.TempDir(), "config.yml", fmt.Sprintf(
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
		`redis_up{target="cache"} 1`,
		`redis_memory_used_bytes{target="cache"}`,
		`redis_connected_clients{target="cache"}`,
		`warden_exporter_collector_success{collector="redis/cache"} 1`,
	)
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pg_up 1 after SIGCONT", func() bool {
		body, _ := exp.scrape(t, "2")
		return containsLine(body, `pg_up{target="db"} 1`)
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
	waitFor(t, "redis_up 1 after restart", func() bool {
		body, _ := exp.scrape(t, "2")
		return containsLine(body, `redis_up{target="cache"} 1`)
	})
}

func TestMetricsOutputPassesPromtoolLint(t *testing.T) {
	promtool := os.Getenv("PROMTOOL")
	if promtool == "" {
		t.Fatal("PROMTOOL is not set: run `scripts/tools.sh promtool` and `eval \"$(scripts/tools.sh env)\"` (make test does this)")
	}
	pg := testenv.StartPostgres(t)
	redis := testenv.StartRedis(t)
	cfg := writeFile(t, t.TempDir(), "config.yml", fmt.Sprintf(
		"postgres:\n  - name: db\n    dsn: %s\nredis:\n  - name: cache\n    address: redis://%s/0\n", pg.DSN("postgres"), redis.Addr))
	exp := startExporter(t, cfg)
	body, _ := exp.scrape(t, "")
	cmd := exec.CommandContext(context.Background(), promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestConcurrentScrapesAreServed(t *testing.T) {
	redis := testenv.StartRedis(t)
	cfg := writeFile(t, t.TempDir(), "config.yml", fmt.Sprintf("redis:\n  - name: cache\n    address: redis://%s/0\n", redis.Addr))
	exp := startExporter(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(exp.url + "/metrics")
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !containsLine(string(b), `redis_up{target="cache"} 1`) {
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
