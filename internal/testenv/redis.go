package testenv

import (
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
	proc *process
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
	if err := r.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// StartRedis starts a Redis server that is removed when the test ends.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r, err := NewRedis(opts...)
	if err != nil {
		t.Fatalf("start redis: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on its port after Kill.
func (r *Redis) Start() error {
	args := append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--protected-mode", "no",
	}, r.args...)
	cmd := exec.Command(r.bin, args...)
	p, err := startProcess(cmd, filepath.Join(r.dir, "redis.log"))
	if err != nil {
		return err
	}
	if err := waitTCP(r.Addr, 10*time.Second, p); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("redis: %w\n%s", err, Tail(filepath.Join(r.dir, "redis.log"), 20))
	}
	r.proc = p
	return nil
}

// Pause freezes the server (SIGSTOP).
func (r *Redis) Pause() error { return r.proc.pause() }

// Resume unfreezes the server (SIGCONT).
func (r *Redis) Resume() error { return r.proc.resume() }

// Kill ends the server abruptly; Start brings it back on the same port.
func (r *Redis) Kill() {
	if r.proc != nil {
		r.proc.stop(syscall.SIGKILL, time.Second)
	}
}

// Stop ends the server and removes its directory.
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.stop(syscall.SIGTERM, 5*time.Second)
	}
	os.RemoveAll(r.dir)
}
