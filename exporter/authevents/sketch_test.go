package authevents

import (
	"fmt"
	"math"
	"testing"
)

// splitmix64 is a deterministic stand-in for hashed usernames.
func splitmix64(i uint64) uint64 {
	z := i + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// TestHLLEstimateWithinItsError inserts n distinct hashes (each twice) and
// checks the estimate against the sketch's standard error, 1.04/√m: within
// 4 of them, and within 1 of the truth for the small counts the patterns
// compare (up to 20 with 2^8 registers).
func TestHLLEstimateWithinItsError(t *testing.T) {
	for _, p := range []uint8{hllSourcePrecision, hllGlobalPrecision} {
		for _, n := range []int{0, 1, 3, 20, 100, 500, 10_000, 1_000_000} {
			t.Run(fmt.Sprintf("p=%d/n=%d", p, n), func(t *testing.T) {
				reg := make([]uint8, 1<<p)
				for i := range 2 * n {
					hllInsert(reg, p, splitmix64(uint64(i%n+1)))
				}
				got := hllEstimate(reg)
				tolerance := 4 * 1.04 / math.Sqrt(float64(len(reg))) * float64(n)
				if n <= 20 {
					tolerance = 1
				}
				if math.Abs(got-float64(n)) > tolerance {
					t.Errorf("estimate %.1f for %d distinct, want within %.1f", got, n, tolerance)
				}
			})
		}
	}
}

func TestHLLMergeIsTheUnion(t *testing.T) {
	a, b := make([]uint8, hllGlobalRegs), make([]uint8, hllGlobalRegs)
	for i := range 30_000 {
		hllInsert(a, hllGlobalPrecision, splitmix64(uint64(i)))        // 0..29999
		hllInsert(b, hllGlobalPrecision, splitmix64(uint64(i+20_000))) // 20000..49999
	}
	hllMerge(a, b)
	if got := hllEstimate(a); math.Abs(got-50_000) > 50_000*0.04 {
		t.Errorf("union estimate %.0f, want 50000 ± 4%%", got)
	}
}

// TestRunTableCountsRunsUntilSuccessOrWindowEnd checks the failure runs:
// counted per key, ended by the key's success, expired once the key's last
// failure is out of the window, and left alone by other keys' successes.
func TestRunTableCountsRunsUntilSuccessOrWindowEnd(t *testing.T) {
	const buckets = 10
	x, y := splitmix64(1), splitmix64(2)
	tests := []struct {
		name      string
		failures  []int64 // periods of x's failures
		other     bool    // y succeeds in between
		successAt int64
		want      uint64
	}{
		{"five failures then success", []int64{100, 100, 101, 102, 103}, false, 103, 5},
		{"another key's success changes nothing", []int64{100, 101, 102}, true, 102, 3},
		{"last failure at the window's edge still counts", []int64{100, 101}, false, 110, 2},
		{"last failure out of the window", []int64{100, 101}, false, 111, 0},
		{"no failure", nil, false, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newRunTable()
			for _, p := range tt.failures {
				rt.failure(x, p, buckets)
			}
			if tt.other {
				rt.failure(y, tt.successAt, buckets)
				if got := rt.success(y, tt.successAt, buckets); got != 1 {
					t.Fatalf("y's run = %d, want 1", got)
				}
			}
			if got := rt.success(x, tt.successAt, buckets); got != tt.want {
				t.Errorf("run = %d, want %d", got, tt.want)
			}
			if got := rt.success(x, tt.successAt, buckets); got != 0 {
				t.Errorf("run after a success = %d, want 0", got)
			}
		})
	}
}
