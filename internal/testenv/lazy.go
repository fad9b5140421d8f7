package testenv

import (
	"sync"
	"testing"
)

// Lazy is a server shared by the tests of one package, started by the first
// test that asks for it. Tests that need no server never start one, and
// with -short every test that asks is skipped, so `go test -short ./...`
// runs the pure unit tests alone. Tests isolate themselves inside the
// shared server (a fresh database, a fresh Redis db number, a fresh
// namespace); a test that pauses, kills or reconfigures a server starts its
// own.
//
//	var pg = testenv.NewLazy(func() (*testenv.Postgres, error) { return testenv.NewPostgres() }, (*testenv.Postgres).Stop)
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunAndStop(m, pg)) }
//	func TestX(t *testing.T) { db := pg.Get(t) ... }
type Lazy[T any] struct {
	start func() (T, error)
	stop  func(T)

	once    sync.Once
	started bool
	v       T
	err     error
}

// NewLazy returns a server that start creates on first use and stop ends
// when the package's tests are done.
func NewLazy[T any](start func() (T, error), stop func(T)) *Lazy[T] {
	return &Lazy[T]{start: start, stop: stop}
}

// Get returns the shared server, starting it the first time. It skips the
// test under -short and fails it when the server cannot start (every later
// caller fails the same way, without trying again).
func (l *Lazy[T]) Get(t testing.TB) T {
	t.Helper()
	skipUnderShort(t)
	l.once.Do(func() {
		l.v, l.err = l.start()
		l.started = l.err == nil
	})
	if l.err != nil {
		t.Fatalf("start shared server: %v", l.err)
	}
	return l.v
}

// Close stops the server if a test started it.
func (l *Lazy[T]) Close() {
	if l.started && l.stop != nil {
		l.stop(l.v)
	}
}

// skipUnderShort skips a test that needs a real server under -short, so
// that `go test -short ./...` runs the pure unit tests alone. Every helper
// that starts a server for one test (the Start* functions) and Lazy.Get
// call it.
func skipUnderShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real server; skipped with -short")
	}
}

// Closer is anything RunAndStop can stop after the tests.
type Closer interface{ Close() }

// RunAndStop runs the package's tests, then stops the shared servers they
// started, and returns the exit code for os.Exit.
func RunAndStop(m *testing.M, servers ...Closer) int {
	code := m.Run()
	for _, s := range servers {
		s.Close()
	}
	return code
}
