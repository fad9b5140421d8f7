// Package testenv starts throw-away real servers (PostgreSQL, Redis,
// Prometheus, Alertmanager, etcd + kube-apiserver) on free loopback ports for
// tests, and lets tests pause, resume, kill and restart them to inject faults.
package testenv

import (
	"bytes"
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

// process is a server started in its own process group, so that pausing or
// killing it reaches every child (PostgreSQL forks a backend per
// connection).
type process struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	logf   *os.File
	paused bool
}

func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logf: logf}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// signalGroup signals the server's process group and every descendant:
// PostgreSQL backends call setsid() and so leave the group, yet a hung
// server must hang on connections that are already open too.
func (p *process) signalGroup(sig syscall.Signal) error {
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
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces; the
		// parent pid is the second field after it.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil {
			children[ppid] = append(children[ppid], n)
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

// pause stops every process of the server (SIGSTOP): connections stay open
// and nothing answers, as with a hung server.
func (p *process) pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	return p.signalGroup(syscall.SIGSTOP)
}

func (p *process) resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	return p.signalGroup(syscall.SIGCONT)
}

// stop asks the server to exit with sig, waits up to grace, then kills the
// whole group.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	if p.paused {
		_ = p.signalGroup(syscall.SIGCONT)
		p.paused = false
	}
	p.mu.Unlock()
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
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
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

// waitTCP waits until something accepts connections on addr.
func waitTCP(addr string, timeout time.Duration, p *process) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return errors.New("process exited")
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not accepting connections after %s", addr, timeout)
}
