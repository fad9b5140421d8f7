// Package testenv starts throw-away real servers (PostgreSQL, Redis,
// Prometheus, Alertmanager, etcd + kube-apiserver) on free loopback ports for
// tests, and lets tests pause, resume, kill and restart them to inject faults.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// LookBinary finds a server binary: first the environment variable env (a
// path to the binary), then PATH, then each of the extra glob patterns
// (the newest match wins). The error names install, the command that
// provides the binary.
func LookBinary(name, env, install string, globs ...string) (string, error) {
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%s=%s: %w", env, p, err)
			}
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, g := range globs {
		matches, _ := filepath.Glob(g)
		sort.Strings(matches)
		for i := len(matches) - 1; i >= 0; i-- {
			if st, err := os.Stat(matches[i]); err == nil && !st.IsDir() {
				return matches[i], nil
			}
		}
	}
	return "", fmt.Errorf("%s not found (set %s or install it: %s)", name, env, install)
}

// Process is a program run in its own process group with its output in a
// log file: the servers of this package and the demo's own binaries.
// Pausing or killing it reaches every child (PostgreSQL forks a backend per
// connection). It can be started again after Stop, with the same command.
type Process struct {
	logPath string
	command func() *exec.Cmd

	mu     sync.Mutex
	cmd    *exec.Cmd // nil before Start and after Stop
	done   chan struct{}
	paused bool
}

// NewProcess returns a stopped process that Start runs with a fresh command
// from command each time, appending its stdout and stderr to logPath.
func NewProcess(logPath string, command func() *exec.Cmd) *Process {
	return &Process{logPath: logPath, command: command}
}

// StartProcess is NewProcess followed by Start.
func StartProcess(logPath string, command func() *exec.Cmd) (*Process, error) {
	p := NewProcess(logPath, command)
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// LogPath is the file the process writes to.
func (p *Process) LogPath() string { return p.logPath }

// Start runs the command, unless it is still running. It does not wait
// for the program to be ready (see WaitReady).
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("start %s: already running", p.cmd.Path)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	cmd := p.command()
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done, p.paused = cmd, done, false
	return nil
}

// PID is the process id of the current run, 0 when it is not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited is closed once the current run has ended (at once when the
// process is not running).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return p.done
}

// WaitReady polls ready until it returns nil. When it does not within
// timeout, or the process exits first, it kills the process and returns the
// last error with the end of the log.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	if err := waitReady(ctx, timeout, p.Exited(), ready); err != nil {
		p.Stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("%w\n%s", err, Tail(p.logPath, 20))
	}
	return nil
}

// signalGroup signals the process group and every descendant: PostgreSQL
// backends call setsid() and so leave the group, yet a hung server must
// hang on connections that are already open too. Call with mu held.
func (p *Process) signalGroup(sig syscall.Signal) error {
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	for _, child := range descendants(pid) {
		_ = syscall.Kill(child, sig)
	}
	return nil
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(n); err == nil {
			children[st.ppid] = append(children[st.ppid], n)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, c := range children[cur] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// Pause stops every process of the group (SIGSTOP): connections stay open
// and nothing answers, as with a hung server.
func (p *Process) Pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	return p.signalGroup(syscall.SIGSTOP)
}

// Resume continues a paused process (SIGCONT).
func (p *Process) Resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	return p.signalGroup(syscall.SIGCONT)
}

// Stop asks the process to exit with sig, waits up to grace, then kills
// the whole group, and returns once every process of it has gone. Stopping
// a process that is not running does nothing.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	if p.paused {
		_ = p.signalGroup(syscall.SIGCONT)
		p.paused = false
	}
	// Remember the children now: once the leader is gone they are
	// reparented and no longer found below it.
	children := descendants(p.cmd.Process.Pid)
	_ = p.signalGroup(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.signalGroup(syscall.SIGKILL)
		<-p.done
	}
	// Children may outlive the leader briefly; a restart on the same data
	// directory fails while a PostgreSQL backend still holds the shared
	// memory, so wait until every one has gone.
	_ = p.signalGroup(syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	p.cmd = nil
}

// Tail returns the last lines of a log file, for error messages.
func Tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
