package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// binary is one of the demo's own programs (authsim, exporter, remediator)
// with its output in logPath; it is killed with the demo.
func binary(logPath, bin string, args ...string) *testenv.Process {
	return testenv.NewProcess(logPath, func() *exec.Cmd { return exec.Command(bin, args...) })
}

// startHealthy (re)starts p and waits until healthURL answers 200 (when
// set). name is for the error.
func startHealthy(ctx context.Context, name string, p *testenv.Process, healthURL string) error {
	stopBinary(p) // a restart; nothing when p is not running
	if err := p.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if healthURL == "" {
		return nil
	}
	if err := p.WaitReady(ctx, 30*time.Second, testenv.HTTPReady(healthURL)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// stopBinary sends SIGTERM, then kills the program if it has not exited 5 s
// later.
func stopBinary(p *testenv.Process) { p.Stop(syscall.SIGTERM, 5*time.Second) }

// moduleRoot finds the directory of the warden module (the demo builds its
// binaries from there).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the warden module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// buildBinaries compiles the given ./cmd packages into dir, printing a
// progress line because a cold build takes a minute or two.
func buildBinaries(ctx context.Context, root, dir string, say func(string, ...any), names ...string) (map[string]string, error) {
	pkgs := make([]string, 0, len(names))
	for _, n := range names {
		pkgs = append(pkgs, "./cmd/"+n)
	}
	say("building %s (cached after the first run)", strings.Join(names, ", "))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	say("built in %s", time.Since(start).Round(100*time.Millisecond))
	bins := map[string]string{}
	for _, n := range names {
		bins[n] = filepath.Join(dir, n)
	}
	return bins, nil
}
