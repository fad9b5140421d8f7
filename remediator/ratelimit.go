package remediator

import (
	"sync"
	"time"
)

// rateLimiter is a sliding one-hour window of action claims in this
// process, used when no coordination namespace is set (sharedlimit.go keeps
// the window for all replicas otherwise): with N replicas the effective
// limit is then at most N times the configured one.
type rateLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	times  []time.Time
}

func newRateLimiter(limit int) *rateLimiter {
	return &rateLimiter{limit: limit, window: time.Hour}
}

func (l *rateLimiter) setLimit(limit int) {
	l.mu.Lock()
	l.limit = limit
	l.mu.Unlock()
}

// reserve takes a slot if one is free. cancel gives it back (the action
// was not claimed after all).
func (l *rateLimiter) reserve(now time.Time) (ok bool, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == 0 {
		return true, func() {}
	}
	cut := 0
	for cut < len(l.times) && now.Sub(l.times[cut]) >= l.window {
		cut++
	}
	l.times = l.times[cut:]
	if len(l.times) >= l.limit {
		return false, func() {}
	}
	l.times = append(l.times, now)
	var once sync.Once
	return true, func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			for i := len(l.times) - 1; i >= 0; i-- {
				if l.times[i].Equal(now) {
					l.times = append(l.times[:i], l.times[i+1:]...)
					return
				}
			}
		})
	}
}
