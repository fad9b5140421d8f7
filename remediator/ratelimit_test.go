package remediator

import (
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(2)
	t0 := time.Now()
	ok1, _ := l.reserve(t0)
	ok2, cancel2 := l.reserve(t0.Add(time.Second))
	ok3, _ := l.reserve(t0.Add(2 * time.Second))
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("reserve: %v %v %v", ok1, ok2, ok3)
	}
	cancel2()
	if ok, _ := l.reserve(t0.Add(3 * time.Second)); !ok {
		t.Fatal("cancelled reservation not returned")
	}
	if ok, _ := l.reserve(t0.Add(time.Hour + time.Second)); !ok {
		t.Fatal("window did not slide")
	}
	l.setLimit(0)
	for range 100 {
		if ok, _ := l.reserve(t0); !ok {
			t.Fatal("limit 0 must mean unlimited")
		}
	}
}
