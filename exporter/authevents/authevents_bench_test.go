package authevents

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/logfollow"
)

// authBenchLines returns realistic auth-service log lines (about 200 bytes
// each): the contract's fields, a mix of events with about a fifth failed
// logins from many sources.
func authBenchLines(n int) [][]byte {
	events := []string{"authentication_attempt", "authentication_attempt", "authentication_success", "authentication_failed",
		"invalid_token", "jwt_validation_error", "unauthorized", "admin_action"}
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"timestamp":%q,"level":"info","event":%q,"ip_address":"10.%d.%d.%d","user_id":"user-%06d","action":"login","resource":"/api/v1/auth/login","risk_score":%.2f}`,
			base.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), events[rng.IntN(len(events))],
			rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(1_000_000), rng.Float64())
	}
	return lines
}

// BenchmarkAuthLineIngest measures lines per second per core through the
// collector's ingest path (parse, event counters, top-K of failures), and
// through the line splitter as the file follower feeds it.
func BenchmarkAuthLineIngest(b *testing.B) {
	lines := authBenchLines(4096)
	var size int
	for _, l := range lines {
		size += len(l)
	}
	build := func(b *testing.B) *Collector {
		cfg := defaultAuthConfig()
		cfg.Files = []string{"unused"}
		c, err := newCollector(b.Context(), &cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		now := time.Date(2026, 11, 27, 12, 5, 0, 0, time.UTC)
		c.now = func() time.Time { return now }
		return c
	}
	b.Run("lines", func(b *testing.B) {
		c := build(b)
		b.SetBytes(int64(size / len(lines)))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Line(lines[i%len(lines)])
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		if c.lines.Load() != uint64(b.N) || c.invalidLines[0].Load() != 0 {
			b.Fatalf("lines %d invalid %d", c.lines.Load(), c.invalidLines[0].Load())
		}
	})
	b.Run("stream", func(b *testing.B) {
		c := build(b)
		stream := append(bytes.Join(lines, []byte("\n")), '\n')
		split := logfollow.NewSplitter(authDefaultMaxLineBytes)
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		for b.Loop() {
			// 64 KiB reads, as the file follower does.
			for off := 0; off < len(stream); off += 64 << 10 {
				split.Write(stream[off:min(off+64<<10, len(stream))], c)
			}
		}
		b.ReportMetric(float64(b.N*len(lines))/b.Elapsed().Seconds(), "lines/s")
	})
}
