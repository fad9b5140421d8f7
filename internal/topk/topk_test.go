package topk

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func addrN(i uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i)
	return netip.AddrFrom4(b)
}

// TestTopKExactForKnownHeavyHitters mixes 20 heavy sources (known counts)
// with 200,000 sources seen once, shuffled, and expects exactly the heavy
// sources with exactly their counts, and the rest as overflow.
func TestTopKExactForKnownHeavyHitters(t *testing.T) {
	const k, noise = 20, 200_000
	now := time.Unix(1_800_000_000, 0)
	var stream []netip.Addr
	want := map[netip.Addr]uint64{}
	for i := range k {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})
		want[a] = uint64(5000 + 500*i)
		for range want[a] {
			stream = append(stream, a)
		}
	}
	for i := range noise {
		stream = append(stream, addrN(0x0a000000+uint32(i)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })

	s := NewSliding(k, 10*k, 10*time.Minute)
	for _, a := range stream {
		if !s.Add(a, now, now) {
			t.Fatal("event inside the window dropped")
		}
	}
	top, total := s.Top(now)
	if total != uint64(len(stream)) {
		t.Fatalf("total = %d, want %d", total, len(stream))
	}
	if len(top) != k {
		t.Fatalf("got %d sources, want %d", len(top), k)
	}
	var sum uint64
	for i, sc := range top {
		if want[sc.Key] != sc.Count {
			t.Errorf("top[%d] = %s %d, want count %d", i, sc.Key, sc.Count, want[sc.Key])
		}
		if i > 0 && top[i-1].Count < sc.Count {
			t.Errorf("top not sorted at %d", i)
		}
		sum += sc.Count
	}
	if overflow := total - sum; overflow != noise {
		t.Errorf("overflow = %d, want %d", overflow, noise)
	}
}

func TestTopKSlidingWindow(t *testing.T) {
	window := 10 * time.Minute
	start := time.Unix(1_800_000_000, 0)
	a := netip.MustParseAddr("203.0.113.7")
	b := netip.MustParseAddr("198.51.100.1")
	s := NewSliding(5, 50, window)
	for i := range 5 {
		s.Add(a, start, start.Add(time.Duration(i)*time.Second))
	}
	s.Add(b, start.Add(5*time.Minute), start.Add(5*time.Minute))

	tests := []struct {
		name      string
		now       time.Time
		wantTotal uint64
		want      []Count
	}{
		{"both in window", start.Add(6 * time.Minute), 6, []Count{{a, 5}, {b, 1}}},
		{"first aged out", start.Add(11 * time.Minute), 1, []Count{{b, 1}}},
		{"all aged out", start.Add(16 * time.Minute), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top, total := s.Top(tt.now)
			if total != tt.wantTotal || len(top) != len(tt.want) {
				t.Fatalf("top = %v total %d, want %v total %d", top, total, tt.want, tt.wantTotal)
			}
			for i := range top {
				if top[i] != tt.want[i] {
					t.Fatalf("top[%d] = %v, want %v", i, top[i], tt.want[i])
				}
			}
		})
	}

	if s.Add(a, start, start.Add(30*time.Minute)) {
		t.Error("event older than the window was counted")
	}
	future := start.Add(time.Hour)
	if !s.Add(a, future.Add(time.Hour), future) {
		t.Error("event from the future was dropped instead of counted as now")
	}
	if top, _ := s.Top(future); len(top) != 1 || top[0] != (Count{a, 1}) {
		t.Errorf("after future event top = %v", top)
	}
}

// TestTopKMemoryFlatWithMillionSources feeds 1,000,000 distinct sources and
// checks that the structure holds no more counters than its fixed limit and
// that the heap did not grow with the number of sources.
func TestTopKMemoryFlatWithMillionSources(t *testing.T) {
	const k = 20
	now := time.Unix(1_800_000_000, 0)
	s := NewSliding(k, 10*k, 10*time.Minute)
	// Fill every bucket once so that the steady state is measured.
	for i := range windowBuckets {
		at := now.Add(-time.Duration(i) * time.Minute)
		for j := range 10 * k {
			s.Add(addrN(uint32(j)), at, now)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		at := now.Add(-time.Duration(i%windowBuckets) * time.Minute)
		s.Add(addrN(0x0b000000+uint32(i)), at, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held, limit := s.size()
	if limit != windowBuckets*10*k || held > limit {
		t.Fatalf("counters held %d, limit %d (want at most %d)", held, limit, windowBuckets*10*k)
	}
	// 1,000,000 keys kept naively would take tens of MB; the summary must
	// stay within a small constant.
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if growth > 4<<20 {
		t.Fatalf("heap grew by %d bytes for 1,000,000 distinct sources", growth)
	}
	if _, total := s.Top(now); total != 1_000_000+windowBuckets*10*k {
		t.Fatalf("total = %d", total)
	}
}

// size reports the number of counters held and the number the structure
// may ever hold; the first never exceeds the second.
func (s *Sliding) size() (held, limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.buckets {
		sk := &s.buckets[i].sketch
		held += max(len(sk.heap), len(sk.index))
		limit += sk.capacity
	}
	return held, limit
}

// TestPlacementFollowsCounters checks the slots Place reports: stable for a
// key while it holds its counter, handed over (Taken) when a new key evicts
// the smallest, found by Lookup, listed by Counters, and renumbered from 0
// when a sub-window starts a new period.
func TestPlacementFollowsCounters(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a, b, c := addrN(1), addrN(2), addrN(3)
	s := NewSliding(1, 2, 10*time.Second) // 1 s sub-windows, 2 counters each
	place := func(k netip.Addr, at time.Time) Placement {
		t.Helper()
		p, ok := s.Place(k, at, now)
		if !ok {
			t.Fatalf("Place(%v) dropped", k)
		}
		return p
	}
	pa1, pa2, pb := place(a, now), place(a, now), place(b, now)
	if pa1.Slot != pa2.Slot || pa1.Taken || pa2.Taken || pb.Taken || pb.Slot == pa1.Slot || pb.Epoch != pa1.Epoch {
		t.Fatalf("a %+v %+v, b %+v: want a stable slot for a, another for b", pa1, pa2, pb)
	}
	pc := place(c, now) // evicts b, the smallest
	if !pc.Taken || pc.Slot != pb.Slot {
		t.Fatalf("c %+v, want b's slot %d taken over", pc, pb.Slot)
	}
	if _, ok := s.Lookup(b, now, now); ok {
		t.Error("Lookup found the evicted key")
	}
	if p, ok := s.Lookup(c, now, now); !ok || p.Slot != pc.Slot || p.Bucket != pc.Bucket {
		t.Errorf("Lookup(c) = %+v %v, want %+v", p, ok, pc)
	}
	got := map[netip.Addr]int{}
	s.Counters(now, func(p Placement, k netip.Addr, _ uint64) { got[k] = p.Slot })
	if len(got) != 2 || got[a] != pa1.Slot || got[c] != pc.Slot {
		t.Errorf("Counters = %v, want a at %d and c at %d", got, pa1.Slot, pc.Slot)
	}
	// The same ring position ten sub-windows later is a new period.
	later := now.Add(10 * time.Second)
	p, ok := s.Place(c, later, later)
	if !ok || p.Bucket != pa1.Bucket || p.Epoch == pa1.Epoch || p.Slot != 0 || p.Taken {
		t.Errorf("Place in a new period = %+v %v, want slot 0 of bucket %d with a new epoch", p, ok, pa1.Bucket)
	}
	if _, ok := s.Place(a, now, later); ok {
		t.Error("Place accepted an event older than the window")
	}
}
