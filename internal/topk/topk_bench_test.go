package topk

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkTopKDistinctSources feeds 1,000,000 distinct sources per
// iteration into the windowed top-K and reports the heap it holds
// afterwards, which must not depend on the number of sources.
func BenchmarkTopKDistinctSources(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	var held uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := NewSliding(20, 200, 10*time.Minute)
		for i := range 1_000_000 {
			s.Add(addrN(uint32(i)), now.Add(-time.Duration(i%windowBuckets)*time.Minute), now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(s)
	}
	b.ReportMetric(float64(held), "heap-bytes")
	b.ReportMetric(1_000_000*float64(b.N)/b.Elapsed().Seconds(), "sources/s")
}
