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
// 2^8 registers per tracked source (about 6.5 % standard error, 4 % or
// better below 100) and 2^14 for the window-wide counts (about 0.8 %).
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

// hllEstimate returns the estimated number of distinct hashes inserted,
// with Ertl's improved raw estimator ("New cardinality estimation
// algorithms for HyperLogLog sketches", 2017, algorithm 6): nearly unbiased
// from 0 to far beyond the register count, without the empirical bias
// tables of HyperLogLog++ or a switch to linear counting.
func hllEstimate(reg []uint8) float64 {
	m := float64(len(reg))
	q := 64 - bits.TrailingZeros(uint(len(reg))) // register values are 0..q+1
	var c [66]float64
	for _, v := range reg {
		c[v]++
	}
	z := m * hllTau(1-c[q+1]/m)
	for k := q; k >= 1; k-- {
		z = 0.5 * (z + c[k])
	}
	z += m * hllSigma(c[0]/m)
	return m * m / (2 * math.Ln2 * z)
}

func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
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

// estimate is x's run as of period: the least of its cells (conservative
// update keeps every cell at or above the true count).
func (t *runTable) estimate(x uint64, period, buckets int64) uint64 {
	est := uint64(math.MaxUint32)
	for r := range runRows {
		est = min(est, runCount(t.cells[t.index(x, r)], period, buckets))
	}
	return est
}

// failure counts one failed login for x in period.
func (t *runTable) failure(x uint64, period, buckets int64) {
	est := t.estimate(x, period, buckets)
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
	est := t.estimate(x, period, buckets)
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
