// Package topk keeps the heaviest keys of a stream over a sliding time
// window in fixed memory (a ring of Space-Saving summaries), so that
// per-source metrics stay bounded whatever the number of sources.
package topk

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// spaceSaving is the Space-Saving stream summary of Metwally, Agrawal and
// El Abbadi ("Efficient computation of frequent and top-k elements in data
// streams", 2005): at most capacity counters; a new key takes over the
// smallest counter and inherits its count as its possible overestimate.
// Every key whose true count exceeds total/capacity is guaranteed to be held,
// and count-overestimate is a lower bound of its true count that is exact for
// a key that has not been evicted since it first arrived.
type spaceSaving struct {
	capacity int
	total    uint64
	index    map[netip.Addr]int // key → position in heap
	heap     []spaceSavingEntry // min-heap by count
}

type spaceSavingEntry struct {
	key         netip.Addr
	count, over uint64 // over: how much count may overestimate
	// slot numbers the counter, stable while it moves in the heap, for
	// callers that keep state beside each counter (see Sliding.Place).
	slot int
}

func newSpaceSaving(capacity int) spaceSaving {
	return spaceSaving{
		capacity: capacity,
		index:    make(map[netip.Addr]int, capacity),
		heap:     make([]spaceSavingEntry, 0, capacity),
	}
}

// add counts n for key and returns the slot of its counter and whether the
// key took the counter over from another key.
func (s *spaceSaving) add(key netip.Addr, n uint64) (slot int, taken bool) {
	s.total += n
	if i, ok := s.index[key]; ok {
		slot = s.heap[i].slot
		s.heap[i].count += n
		s.down(i)
		return slot, false
	}
	if len(s.heap) < s.capacity {
		slot = len(s.heap)
		s.heap = append(s.heap, spaceSavingEntry{key: key, count: n, slot: slot})
		s.index[key] = slot
		s.up(slot)
		return slot, false
	}
	smallest := s.heap[0]
	delete(s.index, smallest.key)
	s.heap[0] = spaceSavingEntry{key: key, count: smallest.count + n, over: smallest.count, slot: smallest.slot}
	s.index[key] = 0
	s.down(0)
	return smallest.slot, true
}

// slotOf returns the slot of key's counter.
func (s *spaceSaving) slotOf(key netip.Addr) (int, bool) {
	i, ok := s.index[key]
	if !ok {
		return 0, false
	}
	return s.heap[i].slot, true
}

func (s *spaceSaving) reset() {
	clear(s.index)
	s.heap = s.heap[:0]
	s.total = 0
}

func (s *spaceSaving) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.index[s.heap[i].key] = i
	s.index[s.heap[j].key] = j
}

func (s *spaceSaving) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if s.heap[parent].count <= s.heap[i].count {
			return
		}
		s.swap(i, parent)
		i = parent
	}
}

func (s *spaceSaving) down(i int) {
	n := len(s.heap)
	for {
		smallest, l, r := i, 2*i+1, 2*i+2
		if l < n && s.heap[l].count < s.heap[smallest].count {
			smallest = l
		}
		if r < n && s.heap[r].count < s.heap[smallest].count {
			smallest = r
		}
		if smallest == i {
			return
		}
		s.swap(i, smallest)
		i = smallest
	}
}

// windowBuckets is the number of sub-windows a sliding window is cut into.
const windowBuckets = 10

// Buckets is the number of sub-windows of a Sliding window.
const Buckets = windowBuckets

// Sliding keeps the heaviest keys over a sliding time window as a ring
// of Space-Saving summaries, one per sub-window of window/windowBuckets,
// merged when read. Memory is fixed by capacity and windowBuckets, whatever
// the number of distinct keys.
type Sliding struct {
	k    int
	slot time.Duration

	mu      sync.Mutex
	buckets [windowBuckets]struct {
		epoch  int64 // slot number this bucket holds; 0 = never used
		sketch spaceSaving
	}
}

// NewSliding returns an empty window reporting k keys, keeping at most
// capacity counters per sub-window.
func NewSliding(k, capacity int, window time.Duration) *Sliding {
	s := &Sliding{k: k, slot: window / windowBuckets}
	if s.slot <= 0 {
		s.slot = 1
	}
	for i := range s.buckets {
		s.buckets[i].sketch = newSpaceSaving(capacity)
	}
	return s
}

// Add counts one event for key at time at. Events from the future count as
// now; events older than the window are dropped (reported false).
func (s *Sliding) Add(key netip.Addr, at, now time.Time) bool {
	_, ok := s.Place(key, at, now)
	return ok
}

// Placement says which counter an event went to, for callers that keep
// state beside each counter (such as a sketch of the key's users): the
// sub-window's place in the ring and period, and the counter's slot in it.
// State kept for a (Bucket, Slot) belongs to another key when Epoch differs
// from the one the state was kept for (the sub-window started a new period)
// or when Taken is set (the key took the counter over from an evicted key).
type Placement struct {
	Bucket int   // 0 ≤ Bucket < Buckets
	Slot   int   // 0 ≤ Slot < capacity
	Epoch  int64 // the sub-window's period number, never 0
	Taken  bool
}

// Place counts one event for key at time at, like Add, and says where.
func (s *Sliding) Place(key netip.Addr, at, now time.Time) (Placement, bool) {
	nowEpoch := now.UnixNano() / int64(s.slot)
	epoch := min(at.UnixNano()/int64(s.slot), nowEpoch)
	if epoch <= nowEpoch-windowBuckets || epoch <= 0 {
		return Placement{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bi := int(epoch % windowBuckets)
	b := &s.buckets[bi]
	switch {
	case b.epoch == epoch:
	case b.epoch < epoch:
		b.sketch.reset()
		b.epoch = epoch
	default: // the clock went back past this bucket's data
		return Placement{}, false
	}
	slot, taken := b.sketch.add(key, 1)
	return Placement{Bucket: bi, Slot: slot, Epoch: epoch, Taken: taken}, true
}

// Lookup returns where key's counter is in the sub-window holding time at
// (clamped to now as in Place), without counting anything; ok is false
// when that sub-window holds no counter for key.
func (s *Sliding) Lookup(key netip.Addr, at, now time.Time) (Placement, bool) {
	nowEpoch := now.UnixNano() / int64(s.slot)
	epoch := min(at.UnixNano()/int64(s.slot), nowEpoch)
	if epoch <= nowEpoch-windowBuckets || epoch <= 0 {
		return Placement{}, false
	}
	bi := int(epoch % windowBuckets)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.buckets[bi]
	if b.epoch != epoch {
		return Placement{}, false
	}
	slot, ok := b.sketch.slotOf(key)
	return Placement{Bucket: bi, Slot: slot, Epoch: epoch}, ok
}

// Counters calls fn for every counter of the sub-windows in the window
// ending at now, with its key and guaranteed (lower-bound) count, as Top
// merges them. fn must not call back into s.
func (s *Sliding) Counters(now time.Time, fn func(p Placement, key netip.Addr, count uint64)) {
	nowEpoch := now.UnixNano() / int64(s.slot)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.buckets {
		b := &s.buckets[i]
		if !s.live(b.epoch, nowEpoch) {
			continue
		}
		for _, e := range b.sketch.heap {
			fn(Placement{Bucket: i, Slot: e.slot, Epoch: b.epoch}, e.key, e.count-e.over)
		}
	}
}

// live reports whether a sub-window of period epoch is inside the window
// ending in period nowEpoch.
func (s *Sliding) live(epoch, nowEpoch int64) bool {
	return epoch > nowEpoch-windowBuckets && epoch <= nowEpoch && epoch != 0
}

// Slot is the length of a sub-window.
func (s *Sliding) Slot() time.Duration { return s.slot }

// Count is one reported key and its count in the window.
type Count struct {
	Key   netip.Addr
	Count uint64
}

// Top returns up to k keys with the largest counts in the window ending at
// now, largest first, and the total number of events in the window. A key's
// count is the sum over sub-windows of its guaranteed (lower-bound) count,
// so the reported counts never add up to more than the total and
// total-sum(reported) is the overflow.
func (s *Sliding) Top(now time.Time) ([]Count, uint64) {
	nowEpoch := now.UnixNano() / int64(s.slot)
	merged := make(map[netip.Addr]uint64)
	var total uint64
	s.mu.Lock()
	for i := range s.buckets {
		b := &s.buckets[i]
		if !s.live(b.epoch, nowEpoch) {
			continue
		}
		total += b.sketch.total
		for _, e := range b.sketch.heap {
			if c := e.count - e.over; c > 0 {
				merged[e.key] += c
			}
		}
	}
	s.mu.Unlock()
	out := make([]Count, 0, len(merged))
	for k, c := range merged {
		out = append(out, Count{Key: k, Count: c})
	}
	slices.SortFunc(out, func(a, b Count) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return a.Key.Compare(b.Key)
	})
	if len(out) > s.k {
		out = out[:s.k]
	}
	return out, total
}
