package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a throw-away redis-server on a loopback port.
type Redis struct {
	Addr string
	Port int
	dir  string
	bin  string
	args []string
	proc *Process
}

// RedisOption changes how Redis is started.
type RedisOption func(*redisOptions)

type redisOptions struct{ args []string }

// WithRedisArgs adds command-line arguments (e.g. "--maxmemory", "1mb").
func WithRedisArgs(args ...string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, args...) }
}

// NewRedis starts a Redis server. Stop it with Stop.
func NewRedis(opts ...RedisOption) (*Redis, error) {
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := LookBinary("redis-server", "WARDEN_REDIS_SERVER", "apt-get install -y redis-server (or scripts/install-deps.sh)")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "warden-redis-")
	if err != nil {
		return nil, fmt.Errorf("redis temp dir: %w", err)
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, dir: dir, bin: bin, args: o.args}
	r.proc = NewProcess(filepath.Join(dir, "redis.log"), r.command)
	if err := r.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// StartRedis starts a Redis server that is removed when the test ends; it
// skips the test under -short.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	skipUnderShort(t)
	r, err := NewRedis(opts...)
	if err != nil {
		t.Fatalf("start redis: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on its port after Kill.
func (r *Redis) Start() error {
	if err := r.proc.Start(); err != nil {
		return err
	}
	if err := r.proc.WaitReady(context.Background(), 30*time.Second, tcpReady(r.Addr)); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func (r *Redis) command() *exec.Cmd {
	args := append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--protected-mode", "no",
	}, r.args...)
	return exec.Command(r.bin, args...)
}

// Pause freezes the server (SIGSTOP).
func (r *Redis) Pause() error { return r.proc.Pause() }

// Resume unfreezes the server (SIGCONT).
func (r *Redis) Resume() error { return r.proc.Resume() }

// Kill ends the server abruptly; Start brings it back on the same port.
func (r *Redis) Kill() {
	if r.proc != nil {
		r.proc.Stop(syscall.SIGKILL, time.Second)
	}
}

// Stop ends the server and removes its directory.
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.Stop(syscall.SIGTERM, 5*time.Second)
	}
	os.RemoveAll(r.dir)
}
