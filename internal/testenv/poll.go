package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// Poll calls cond every interval until it returns true or an error, or ctx
// ends (then it returns ctx's error). It is the one polling loop of the
// tests, the demo and the server helpers; cond should treat a transient
// failure as false, not as an error.
func Poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WaitFor polls cond every 100 ms and fails the test when it is still
// false after timeout. timeout only bounds a wait for something that must
// happen: pick it far above what a busy machine needs, never as an
// assertion on speed.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, 100*time.Millisecond, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("timed out waiting for %s (%s)", what, timeout)
	}
}

// WaitHTTP waits up to timeout until url answers 200. It gives up at once
// when exited (the process that should answer; nil: none) is closed.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) error {
	return waitReady(ctx, timeout, exited, HTTPReady(url))
}

// HTTPReady is a readiness check (see Process.WaitReady): url answers 200.
func HTTPReady(url string) func(context.Context) error {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// tcpReady is a readiness check: something accepts connections on addr.
func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// waitReady polls ready every 100 ms until it returns nil, for up to
// timeout, giving up at once when exited (nil: never) is closed.
func waitReady(ctx context.Context, timeout time.Duration, exited <-chan struct{}, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	err := Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		if isClosed(exited) {
			return false, errors.New("process exited during start")
		}
		last = ready(ctx)
		return last == nil, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("not ready after %s: %v", timeout, last)
	}
	return err
}

// isClosed reports whether ch is closed; a nil channel never is.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
