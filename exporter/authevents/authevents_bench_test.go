package authevents

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
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
// collector's ingest path with every signal (parse, event counters, risk
// score histogram, top-K of failures, the sketches of users and sources,
// the failure runs), and through the line splitter as the file follower
// feeds it. lines/cpu-s divides by the CPU time of the benchmark's thread,
// which a busy machine does not inflate the way it does wall time.
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
		cpu := startThreadCPU()
		i := 0
		for b.Loop() {
			c.Line(lines[i%len(lines)])
			i++
		}
		cpu.report(b, b.N)
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
		cpu := startThreadCPU()
		for b.Loop() {
			// 64 KiB reads, as the file follower does.
			for off := 0; off < len(stream); off += 64 << 10 {
				split.Write(stream[off:min(off+64<<10, len(stream))], c)
			}
		}
		cpu.report(b, b.N*len(lines))
		b.ReportMetric(float64(b.N*len(lines))/b.Elapsed().Seconds(), "lines/s")
	})
}

// threadCPU measures the CPU time of the calling goroutine, locked to its
// thread (Linux: getrusage RUSAGE_THREAD).
type threadCPU struct {
	start time.Duration
	ok    bool
}

const rusageThread = 1 // RUSAGE_THREAD on Linux

func threadCPUTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

func startThreadCPU() threadCPU {
	runtime.LockOSThread()
	t, ok := threadCPUTime()
	return threadCPU{start: t, ok: ok}
}

// report adds lines/cpu-s for n lines and unlocks the thread.
func (c threadCPU) report(b *testing.B, n int) {
	defer runtime.UnlockOSThread()
	end, ok := threadCPUTime()
	if c.ok && ok && end > c.start {
		b.ReportMetric(float64(n)/(end-c.start).Seconds(), "lines/cpu-s")
	}
}

// BenchmarkAuthSignalsMemory feeds failed logins (and a success for every
// tenth username) for distinct usernames from distinct sources through the
// collector and reports the heap it holds afterwards, which must not depend
// on the numbers: every signal is a sketch of fixed size. It also reports
// the distinct counts the collector estimated.
func BenchmarkAuthSignalsMemory(b *testing.B) {
	for _, tc := range []struct{ sources, users int }{{1_000, 10_000}, {1_000_000, 10_000_000}} {
		b.Run(fmt.Sprintf("sources=%d/users=%d", tc.sources, tc.users), func(b *testing.B) {
			var held uint64
			var snap signalSnapshot
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				cfg := defaultAuthConfig()
				cfg.Files = []string{"unused"}
				c, err := newCollector(b.Context(), &cfg, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
				c.now = func() time.Time { return now }
				line := make([]byte, 0, 256)
				for i := range tc.users {
					src := uint32(10<<24 | i%tc.sources)
					for _, event := range []string{"authentication_failed", "authentication_success"} {
						if event == "authentication_success" && i%10 != 0 {
							break
						}
						line = append(line[:0], `{"event":"`...)
						line = append(line, event...)
						line = append(line, `","ip_address":"`...)
						line = netip.AddrFrom4([4]byte{byte(src >> 24), byte(src >> 16), byte(src >> 8), byte(src)}).AppendTo(line)
						line = append(line, `","user_id":"user-`...)
						line = strconv.AppendInt(line, int64(i), 10)
						line = append(line, `","risk_score":0.6}`...)
						c.Line(line)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = after.HeapInuse - before.HeapInuse
				top, _ := c.failures.Top(now)
				snap = c.signals.snapshot(c.failures, top, now)
				runtime.KeepAlive(c)
			}
			b.ReportMetric(float64(held)/1e6, "MB")
			b.ReportMetric(snap.distinctSources, "distinct-sources")
			b.ReportMetric(snap.distinctUsers, "distinct-users")
		})
	}
}
