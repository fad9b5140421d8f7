// Package redislog routes go-redis's own log lines (failed dials, pool
// notices), which it writes through a process-wide logger, into slog.
package redislog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// Logger is a go-redis logger writing to slog at debug level: the failures
// it reports already show up in warden's own metrics and audit records.
type Logger struct{ L *slog.Logger }

// Printf implements go-redis's logging interface.
func (l Logger) Printf(_ context.Context, format string, v ...any) {
	l.L.Debug(fmt.Sprintf(format, v...))
}

// Install makes go-redis log through logger. It changes process-wide state,
// so only a main package calls it.
func Install(logger *slog.Logger) {
	redis.SetLogger(Logger{L: logger.With("component", "go-redis")})
}
