package authevents

import (
	"math"
	"math/bits"
)

// The collector's sketches live in flat slices allocated once, so that a
// log line never allocates and memory does not depend on the number of
// distinct usernames or sources.
//
// The distinct counts are dense HyperLogLog registers (Flajolet, Fusy,
// Gandouet and Meunier, 2007). github.com/axiomhq/hyperloglog (v0.3.0) was
// the candidate library, but its Sketch cannot be emptied in place: a
// Space-Saving counter that changes hands needs an empty sketch on the log
// line's path, which that library only gives by allocating a new one. The
// registers here are plain byte slices inside one arena per sub-window,
// emptied with clear().

// hllPrecision* are the register counts (as powers of two) of the sketches:
// 2^8 registers per tracked source (about 6.5 % standard error, exact to a
// few units below 50) and 2^14 for the window-wide counts (about 0.8 %).
const (
	hllSourcePrecision = 8
	hllGlobalPrecision = 14
)

// hllInsert adds a 64-bit hash to the registers reg, of length 2^p.
func hllInsert(reg []uint8, p uint8, x uint64) {
	i := x >> (64 - p)
	w := x<<p | 1<<(p-1)
	r := uint8(bits.LeadingZeros64(w)) + 1
	if r > reg[i] {
		reg[i] = r
	}
}

// hllMerge makes dst the union of dst and src (same length).
func hllMerge(dst, src []uint8) {
	for i, v := range src[:len(dst)] {
		if v > dst[i] {
			dst[i] = v
		}
	}
}

// hllPow2Neg[k] is 2^-k for every register value.
var hllPow2Neg = func() (t [65]float64) {
	for k := range t {
		t[k] = math.Ldexp(1, -k)
	}
	return t
}()

// hllEstimate returns the estimated number of distinct hashes inserted:
// the HyperLogLog estimate, with linear counting where it is more exact
// (small counts). 64-bit hashes need no large-range correction.
func hllEstimate(reg []uint8) float64 {
	m := float64(len(reg))
	var sum float64
	zeros := 0
	for _, v := range reg {
		sum += hllPow2Neg[v]
		if v == 0 {
			zeros++
		}
	}
	var alpha float64
	switch len(reg) {
	case 16:
		alpha = 0.673
	case 32:
		alpha = 0.697
	case 64:
		alpha = 0.709
	default:
		alpha = 0.7213 / (1 + 1.079/m)
	}
	e := alpha * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		return m * math.Log(m/float64(zeros))
	}
	return e
}

// runTable counts, per key hash, the failed logins since the key's last
// success: a count-min sketch of runRows rows of 2^runBits cells with
// conservative update. A cell holds a count and the sub-window period of
// the last failure counted in it; a cell whose last failure is older than
// the window reads as 0, so a run ends with the window. Collisions can only
// make a run look longer (or, after another key's success, shorter); with
// 65,536 cells a row they are rare at the failure rates that matter.
type runTable struct {
	cells []uint64 // row-major; count<<32 | uint32(period)
}

const (
	runRows = 2
	runBits = 16
)

func newRunTable() runTable { return runTable{cells: make([]uint64, runRows<<runBits)} }

// index returns the cell of hash x in row r: rows use disjoint bits of x.
func (t *runTable) index(x uint64, r int) int {
	return r<<runBits | int(x>>(r*runBits))&(1<<runBits-1)
}

// count reads a cell as of period, 0 when its last failure left the
// window of buckets periods.
func runCount(cell uint64, period int64, buckets int64) uint64 {
	last := int64(uint32(cell))
	if period-last >= buckets {
		return 0
	}
	return cell >> 32
}

// failure counts one failed login for x in period.
func (t *runTable) failure(x uint64, period, buckets int64) {
	est := uint64(math.MaxUint32)
	for r := range runRows {
		est = min(est, runCount(t.cells[t.index(x, r)], period, buckets))
	}
	if est >= math.MaxUint32 {
		return // saturated
	}
	est++
	for r := range runRows {
		i := t.index(x, r)
		if runCount(t.cells[i], period, buckets) < est {
			t.cells[i] = est<<32 | uint64(uint32(period))
		} else {
			t.cells[i] = t.cells[i]&^0xffffffff | uint64(uint32(period))
		}
	}
}

// success ends x's run in period and returns its length: the failures
// counted for x since its last success, the latest within the window.
func (t *runTable) success(x uint64, period, buckets int64) uint64 {
	est := uint64(math.MaxUint32)
	for r := range runRows {
		est = min(est, runCount(t.cells[t.index(x, r)], period, buckets))
	}
	if est == 0 {
		return 0
	}
	for r := range runRows {
		i := t.index(x, r)
		c := t.cells[i]
		t.cells[i] = (runCount(c, period, buckets)-est)<<32 | c&0xffffffff
	}
	return est
}
