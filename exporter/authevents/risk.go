package authevents

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// riskHistogram is the distribution of the lines' risk scores, kept in
// atomics so that observing never locks or allocates.
type riskHistogram struct {
	bounds  []float64
	buckets []atomic.Uint64 // per bound, not cumulative; the last: above every bound
	sumBits atomic.Uint64
}

func newRiskHistogram(bounds []float64) riskHistogram {
	return riskHistogram{bounds: bounds, buckets: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *riskHistogram) observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
}

func (h *riskHistogram) collect(ch chan<- prometheus.Metric) {
	cumulative := make(map[float64]uint64, len(h.bounds))
	var n uint64
	for i, b := range h.bounds {
		n += h.buckets[i].Load()
		cumulative[b] = n
	}
	count := n + h.buckets[len(h.bounds)].Load()
	ch <- prometheus.MustNewConstHistogram(authRiskScoreDesc, count, math.Float64frombits(h.sumBits.Load()), cumulative)
}
