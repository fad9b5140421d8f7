package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLandingPageLinksOnlyWhatIsServed: the profiling links appear on the
// landing page only with --web.enable-pprof, and then they answer.
func TestLandingPageLinksOnlyWhatIsServed(t *testing.T) {
	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "config.yml", fmt.Sprintf("auth:\n  files: [%q]\n", dir+"/auth.log"))
	for _, pprof := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof=%t", pprof), func(t *testing.T) {
			args := []string{"--config.file=" + cfg}
			if pprof {
				args = append(args, "--web.enable-pprof")
			}
			exp := testenv.StartBinary(t, exporterBin.Get(t).path, args...)
			_, landing := get(t, exp.URL+"/")
			if got := strings.Contains(landing, "debug/pprof"); got != pprof {
				t.Fatalf("landing page links pprof: %t, want %t", got, pprof)
			}
			code, _ := get(t, exp.URL+"/debug/pprof/cmdline")
			if pprof && code != http.StatusOK {
				t.Fatalf("/debug/pprof/cmdline: status %d, want 200", code)
			}
			if !pprof && code == http.StatusOK {
				t.Fatalf("/debug/pprof/cmdline served without --web.enable-pprof")
			}
		})
	}
}

// TestStartedIsLoggedOnlyOnceListening: a listen address in use fails the
// start without claiming it started.
func TestStartedIsLoggedOnlyOnceListening(t *testing.T) {
	bin := exporterBin.Get(t).path
	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "config.yml", fmt.Sprintf("auth:\n  files: [%q]\n", dir+"/auth.log"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, out := testenv.RunBinary(t, 30*time.Second, bin, "--config.file="+cfg, "--web.listen-address="+l.Addr().String())
	if code == 0 {
		t.Fatalf("exit code 0 with the address in use:\n%s", out)
	}
	if bytes.Contains(out, []byte("warden-exporter started")) {
		t.Fatalf("logged that it started although it could not listen:\n%s", out)
	}
	if !bytes.Contains(out, []byte("address already in use")) {
		t.Errorf("the log does not give the reason:\n%s", out)
	}
}

// TestProbeIsServedByTheBinary: a file with only modules starts an
// exporter that answers /probe: a dead target is down (HTTP 200, pg_up 0),
// a target outside the module's hosts and an unknown module are refused.
func TestProbeIsServedByTheBinary(t *testing.T) {
	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "config.yml", `
modules:
  pg:
    type: postgres
    allowed_targets: ["127.0.0.1"]
    postgres: {dsn: "postgres://warden@/postgres?sslmode=disable", max_connections: 1, connect_timeout: 1s}
`)
	exp := testenv.StartBinary(t, exporterBin.Get(t).path, "--config.file="+cfg)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", port)
	code, body := get(t, exp.URL+"/probe?module=pg&target="+dead)
	if code != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`pg_up{target=%q} 0`, dead)) {
		t.Fatalf("probe of a dead target: %d\n%s", code, body)
	}
	for _, c := range []struct{ query, want string }{
		{"module=pg&target=10.0.0.1", "is not allowed by module"},
		{"module=mysql&target=127.0.0.1", "unknown module"},
	} {
		if code, body := get(t, exp.URL+"/probe?"+c.query); code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("/probe?%s: %d %q, want 400 with %q", c.query, code, body, c.want)
		}
	}
	if _, landing := get(t, exp.URL+"/"); !strings.Contains(landing, "/probe") {
		t.Errorf("the landing page does not link /probe")
	}
}
