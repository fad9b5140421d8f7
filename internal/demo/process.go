package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// process is one of the demo's own binaries (authsim, exporter,
// remediator), started in its own process group with its output in a log
// file, and killed with the demo.
type process struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProcess(name, bin, logPath string, args ...string) *process {
	return &process{name: name, bin: bin, args: args, logPath: logPath}
}

// start runs the binary and waits until healthURL answers 200 (when set).
func (p *process) start(ctx context.Context, healthURL string) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: start %s: %w", p.name, p.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if healthURL == "" {
		return nil
	}
	if err := testenv.WaitHTTP(ctx, healthURL, 30*time.Second, done); err != nil {
		p.stop()
		return fmt.Errorf("%s: %w\n%s", p.name, err, testenv.Tail(p.logPath, 15))
	}
	return nil
}

// stop sends SIGTERM to the group, waits up to 5 s, then kills it.
func (p *process) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// restart stops the process and starts it again with the same arguments.
func (p *process) restart(ctx context.Context, healthURL string) error {
	p.stop()
	return p.start(ctx, healthURL)
}

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
