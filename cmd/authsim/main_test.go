package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// TestRunAppliesFlagsServesAndLogs starts the simulator with initial
// switches from flags on a loopback port, checks them over HTTP, waits for
// brute-force lines in the log file, and stops it by cancelling.
func TestRunAppliesFlagsServesAndLogs(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "auth.log")
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--log-file", logFile, "--rate", "50", "--instance-id", "copy-2",
			"--error-rate", "0.25", "--latency", "10ms", "--brute-force-source", "203.0.113.7", "--brute-force-rate", "40", "--unhealthy"}, &stderr, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("run exited with %d: %s", code, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("not listening")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/health"); code != http.StatusServiceUnavailable || !strings.Contains(body, "copy-2") {
		t.Errorf("/health = %d %s", code, body)
	}
	_, body := get("/admin/fault")
	var f struct {
		ErrorRate  float64 `json:"error_rate"`
		Latency    string  `json:"latency"`
		BruteForce struct {
			Sources []string `json:"sources"`
			Rate    float64  `json:"rate"`
		} `json:"brute_force"`
	}
	if err := json.Unmarshal([]byte(body), &f); err != nil || f.ErrorRate != 0.25 || f.Latency != "10ms" ||
		f.BruteForce.Rate != 40 || len(f.BruteForce.Sources) != 1 {
		t.Errorf("/admin/fault = %s (%v)", body, err)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, `authsim_instance_info{instance_id="copy-2"} 1`) {
		t.Errorf("/metrics = %d", code)
	}

	testenv.WaitFor(t, time.Minute, "5 brute-force lines in the log", func() bool {
		attack := 0
		if data, err := os.ReadFile(logFile); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"event":"authentication_failed","ip_address":"203.0.113.7"`) {
					attack++
				}
			}
		}
		return attack >= 5
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("did not stop")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--rate", "-5"},
		{"--error-rate", "2"},
		{"--brute-force-rate", "5"},
		{"--brute-force-source", "not-an-ip", "--brute-force-rate", "5"},
		{"--spraying-rate", "5"},
		{"--stuffing-rate", "5", "--stuffing-sources", "0"},
		{"--takeover-rate", "5", "--takeover-source", "203.0.113.9", "--takeover-failures", "0"},
		{"--nat-rate", "5"},
		{"--lockout-rate", "-1"},
		{"--no-such-flag"},
	} {
		var stderr bytes.Buffer
		if code := run(t.Context(), args, &stderr, nil); code != 2 {
			t.Errorf("run(%v) = %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

// TestRunStartsAttacksFromFlags starts the simulator with every attack
// switched on by flags and waits for each one's lines in the log.
func TestRunStartsAttacksFromFlags(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "auth.log")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--log-file", logFile, "--rate", "0",
			"--spraying-source", "203.0.113.50", "--spraying-accounts", "500", "--spraying-rate", "100",
			"--stuffing-sources", "2000", "--stuffing-accounts", "10000", "--stuffing-rate", "100",
			"--takeover-source", "203.0.113.66", "--takeover-user", "victim", "--takeover-failures", "3", "--takeover-rate", "50",
			"--lockout-rate", "10", "--nat-source", "192.0.2.10", "--nat-users", "50", "--nat-rate", "50"}, &stderr, ready)
	}()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("run exited with %d: %s", code, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("not listening")
	}
	wants := map[string]string{
		"spraying": `"event":"authentication_failed","ip_address":"203.0.113.50"`,
		"stuffing": `"event":"authentication_failed","ip_address":"198.18.`,
		"takeover": `"event":"authentication_success","ip_address":"203.0.113.66","user_id":"victim"`,
		"lockouts": `"event":"account_locked"`,
		"nat":      `"ip_address":"192.0.2.10"`,
	}
	testenv.WaitFor(t, time.Minute, "lines of every attack in the log", func() bool {
		data, err := os.ReadFile(logFile)
		if err != nil {
			return false
		}
		for _, w := range wants {
			if !bytes.Contains(data, []byte(w)) {
				return false
			}
		}
		return true
	})
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
}

// TestRunServesTheBlocklistFile starts the simulator with a gateway
// blocklist and reads it back; a broken file stops it at start.
func TestRunServesTheBlocklistFile(t *testing.T) {
	dir := t.TempDir()
	blocklist := filepath.Join(dir, "blocklist.conf")
	if err := os.WriteFile(blocklist, []byte("deny 203.0.113.7;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--log-file", filepath.Join(dir, "auth.log"), "--rate", "0",
			"--blocklist-file", blocklist}, &stderr, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("run exited with %d: %s", code, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("not listening")
	}
	resp, err := http.Get("http://" + addr + "/-/blocklist")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Denied []string `json:"denied"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || len(body.Denied) != 1 || body.Denied[0] != "203.0.113.7/32" {
		t.Errorf("GET /-/blocklist: %+v, %v; want [203.0.113.7/32]", body, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}

	if err := os.WriteFile(blocklist, []byte("deny everyone;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	// A run that accepted the file would serve until the timeout.
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if code := run(ctx, []string{"--listen", "127.0.0.1:0", "--log-file", filepath.Join(dir, "auth.log"), "--blocklist-file", blocklist}, &stderr, nil); code != 2 {
		t.Errorf("broken blocklist: exit code %d, want 2 (%s)", code, stderr.String())
	}
}
