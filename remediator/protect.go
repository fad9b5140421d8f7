package remediator

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// Protect wraps an administrative handler (POST /-/reload) in the webhook's
// authentication: the same credentials, the same 401 with a challenge.
func (r *Remediator) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		auth := r.auth.Load()
		if !auth.check(req) {
			r.logUnauthorized(req)
			w.Header().Set("WWW-Authenticate", auth.challenge())
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "unauthorized\n")
			return
		}
		h.ServeHTTP(w, req)
	})
}

// unauthorizedLogInterval spaces the WARN lines about refused credentials:
// a flood of bad requests must not become a flood of log lines. The
// warden_remediator_webhook_requests_total{code="401"} counter still counts
// every one.
const unauthorizedLogInterval = 10 * time.Second

// logThrottle lets one event through per interval and counts the rest.
type logThrottle struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now and how many were suppressed since the
// last line.
func (l *logThrottle) allow(now time.Time, every time.Duration) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

func (r *Remediator) logUnauthorized(req *http.Request) {
	if ok, suppressed := r.unauthorizedLog.allow(time.Now(), unauthorizedLogInterval); ok {
		r.logger.Warn("request refused: missing or wrong credentials", "code", http.StatusUnauthorized,
			"path", req.URL.Path, "remote", req.RemoteAddr, "suppressed_since_last", suppressed)
	}
}
