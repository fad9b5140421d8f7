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
