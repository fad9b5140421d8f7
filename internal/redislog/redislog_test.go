package redislog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestPrintfWritesOneDebugRecord(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{L: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Printf(context.Background(), "redis: %s:%d: connection refused", "127.0.0.1", 6379)
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, `msg="redis: 127.0.0.1:6379: connection refused"`) {
		t.Fatalf("unexpected record: %q", out)
	}
	if n := strings.Count(out, "\n"); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}
