package authsim

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGatewayDeniesListedSourcesAfterReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.conf")
	g, err := NewGateway(path) // no file yet: nothing denied
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	sim, err := New(Config{InstanceID: "gw", Log: logs, Seed: 7, Fault: Fault{BruteForce: BruteForce{Sources: []string{"203.0.113.7"}, Rate: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetGateway(g)
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	fromAttacker := func() int {
		n := 0
		for _, l := range logs.lines(t) {
			if l["ip_address"] == "203.0.113.7" {
				n++
			}
		}
		return n
	}
	sim.Generate(time.Second)
	before := fromAttacker()
	if before < 100 {
		t.Fatalf("%d attack lines before the block, want at least one per try (100)", before)
	}

	text := "# Managed by warden-remediator\ndeny 203.0.113.7/32; # expires=2026-11-30T09:00:00Z\ndeny 2001:db8::/32;\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// Like nginx, the file counts only once reloaded.
	sim.Generate(time.Second)
	if n := fromAttacker() - before; n < 100 {
		t.Errorf("%d attack lines before the reload, want at least 100", n)
	}
	reload := func() int {
		resp, err := http.Post(srv.URL+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := reload(); code != http.StatusOK {
		t.Fatalf("reload: %d", code)
	}
	if got := g.Denies(); !slices.Equal(got, []string{"203.0.113.7/32", "2001:db8::/32"}) {
		t.Errorf("denied after reload: %v", got)
	}
	mid := fromAttacker()
	sim.Generate(time.Second)
	if n := fromAttacker() - mid; n != 0 {
		t.Errorf("%d attack lines after the block", n)
	}
	if !g.Denied("2001:db8::5") || g.Denied("198.51.100.1") || g.Denied("not-an-ip") {
		t.Error("Denied answers wrongly")
	}

	// A broken file keeps the previous list and fails the reload.
	if err := os.WriteFile(path, []byte("deny everyone;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := reload(); code != http.StatusInternalServerError || len(g.Denies()) != 2 {
		t.Errorf("broken file: reload %d, denied %v", code, g.Denies())
	}
	// The block ends when the entry leaves the file and the gateway reloads.
	if err := os.WriteFile(path, []byte("# empty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := reload(); code != http.StatusOK || len(g.Denies()) != 0 {
		t.Errorf("emptied file: reload %d, denied %v", code, g.Denies())
	}
	sim.Generate(time.Second)
	if n := fromAttacker() - mid; n < 100 {
		t.Errorf("%d attack lines after the block ended, want at least 100", n)
	}
	if _, err := NewGateway(strings.Repeat("x", 10) + "/\x00"); err == nil {
		t.Error("unreadable blocklist path accepted")
	}
}

func TestGatewayRefusesLoginsFromDeniedSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.conf")
	if err := os.WriteFile(path, []byte("deny 127.0.0.1;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	sim, err := New(Config{InstanceID: "gw", Log: logs, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetGateway(g)
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	login := func() int {
		code, _ := do(t, "POST", srv.URL+"/api/v1/auth/login", `{"user_id":"alice","password":"secret"}`)
		return code
	}
	if code := login(); code != http.StatusForbidden {
		t.Errorf("login from a denied source: %d, want 403", code)
	}
	if n := len(logs.lines(t)); n != 0 {
		t.Errorf("%d log lines for a login the gateway refused, want none", n)
	}
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if code := login(); code != http.StatusOK {
		t.Errorf("login once the block is lifted: %d, want 200", code)
	}
}
