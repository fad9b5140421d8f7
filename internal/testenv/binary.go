package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildBinary compiles the main package in pkgDir (for a package's own
// tests: ".") into a new temporary directory, for TestMain. The binary is
// named after the package directory; cleanup removes the directory.
func BuildBinary(pkgDir string) (path string, cleanup func(), err error) {
	abs, err := filepath.Abs(pkgDir)
	if err != nil {
		return "", nil, fmt.Errorf("build %s: %w", pkgDir, err)
	}
	name := filepath.Base(abs)
	dir, err := os.MkdirTemp("", name+"-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("build %s: %w", name, err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, ".")
	cmd.Dir = abs
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build %s: %w\n%s", name, err, out)
	}
	return path, cleanup, nil
}

// Binary is a running binary under test that serves HTTP with
// exporter-toolkit's --web.listen-address.
type Binary struct {
	// URL is the base URL it listens on, http://127.0.0.1:<port>.
	URL string
	Cmd *exec.Cmd
	// Exited is closed once the process has exited (Cmd.ProcessState is
	// then set).
	Exited <-chan struct{}
	output syncBuffer
}

// Output is everything the process wrote to stdout and stderr so far.
func (b *Binary) Output() string { return b.output.String() }

// StartBinary starts bin with args and --web.listen-address on a free
// loopback port, and waits until /-/ready answers 200 (skipped under -short). At the end of the
// test it sends SIGTERM (SIGKILL 15 s later) and logs the output if the
// test failed.
func StartBinary(t testing.TB, bin string, args ...string) *Binary {
	t.Helper()
	skipUnderShort(t)
	name := filepath.Base(bin)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := &Binary{URL: "http://" + addr}
	cmd := exec.Command(bin, append([]string{"--web.listen-address=" + addr}, args...)...)
	cmd.Stdout, cmd.Stderr = &b.output, &b.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	b.Cmd, b.Exited = cmd, exited
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, b.Output())
		}
	})
	if err := WaitHTTP(context.Background(), b.URL+"/-/ready", 30*time.Second, exited); err != nil {
		select {
		case <-exited:
			t.Fatalf("%s exited during start (code %d):\n%s", name, cmd.ProcessState.ExitCode(), b.Output())
		default:
		}
		t.Fatalf("%s did not become ready: %v\n%s", name, err, b.Output())
	}
	return b
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WriteFile writes content to dir/name (mode 0600) and returns the path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ContainsLine reports whether a line of body (e.g. a metrics exposition)
// starts with prefix.
func ContainsLine(body, prefix string) bool {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// RunBinary runs bin to completion and returns its exit code and combined
// output. A binary still running after timeout fails the test: the commands
// run this way (configuration checks, refused starts) must exit by
// themselves.
func RunBinary(t testing.TB, timeout time.Duration, bin string, args ...string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v kept running for %s:\n%s", filepath.Base(bin), args, timeout, out)
	}
	if cmd.ProcessState == nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	return cmd.ProcessState.ExitCode(), out
}
