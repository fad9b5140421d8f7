package testenv

import (
	"errors"
	"testing"
)

func TestLazyStartsOnceAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("Get skips under -short; nothing else to check")
	}
	starts, stops := 0, 0
	l := NewLazy(func() (int, error) { starts++; return 42, nil }, func(int) { stops++ })
	l.Close()
	if stops != 0 {
		t.Fatalf("Close before any Get stopped %d times", stops)
	}
	for range 3 {
		if got := l.Get(t); got != 42 {
			t.Fatalf("Get = %d", got)
		}
	}
	l.Close()
	if starts != 1 || stops != 1 {
		t.Fatalf("starts=%d stops=%d, want 1 and 1", starts, stops)
	}
}

func TestLazyFailedStartIsNotStopped(t *testing.T) {
	stops := 0
	l := NewLazy(func() (int, error) { return 0, errors.New("boom") }, func(int) { stops++ })
	l.once.Do(func() { l.v, l.err = l.start(); l.started = l.err == nil })
	l.Close()
	if stops != 0 || l.err == nil {
		t.Fatalf("stops=%d err=%v", stops, l.err)
	}
}
