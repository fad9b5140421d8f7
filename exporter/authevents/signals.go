package authevents

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/internal/topk"
)

// attackSignals is the windowed state behind the attack signals: distinct
// usernames per tracked source, distinct sources and usernames overall,
// login outcomes per sub-window, and the failure runs behind "success after
// failures". It uses the sub-windows of the failures' top-K (same period
// numbers), and its memory is fixed when it is built: usernames and
// addresses are only ever hashed into sketches.
type attackSignals struct {
	seed   maphash.Seed
	slot   time.Duration
	minRun uint64

	mu         sync.Mutex // guards everything below
	buckets    [topk.Buckets]signalBucket
	userRuns   runTable
	sourceRuns runTable
	// afterFailures counts successes that ended a run of at least minRun
	// failures, by kind: 0 user, 1 source.
	afterFailures [2]uint64
}

// signalBucket is one sub-window.
type signalBucket struct {
	epoch               int64 // period number; 0: never used
	failures, successes uint64
	users, sources      []uint8 // registers of every failed login's username and source
	// slotUsers holds, for each counter slot of the top-K's sub-window,
	// the registers of the usernames its key failed for; slotSuccesses its
	// successful logins.
	slotUsers     []uint8
	slotSuccesses []uint64
	// spill holds the usernames of counters that changed hands: they count
	// for source="other".
	spill []uint8
}

const (
	hllSourceRegs = 1 << hllSourcePrecision
	hllGlobalRegs = 1 << hllGlobalPrecision
)

func newAttackSignals(capacity int, slot time.Duration, minRun int) *attackSignals {
	s := &attackSignals{
		seed:       maphash.MakeSeed(),
		slot:       slot,
		minRun:     uint64(minRun),
		userRuns:   newRunTable(),
		sourceRuns: newRunTable(),
	}
	for i := range s.buckets {
		b := &s.buckets[i]
		b.users = make([]uint8, hllGlobalRegs)
		b.sources = make([]uint8, hllGlobalRegs)
		b.slotUsers = make([]uint8, capacity*hllSourceRegs)
		b.slotSuccesses = make([]uint64, capacity)
		b.spill = make([]uint8, hllSourceRegs)
	}
	return s
}

// period returns the sub-window period of an event at time at seen at
// now, as the top-K computes it.
func (s *attackSignals) period(at, now time.Time) (epoch, nowEpoch int64) {
	nowEpoch = now.UnixNano() / int64(s.slot)
	return min(at.UnixNano()/int64(s.slot), nowEpoch), nowEpoch
}

// bucketLocked returns the sub-window of period epoch, emptied when it
// held an older period; nil when epoch is outside the window.
func (s *attackSignals) bucketLocked(epoch, nowEpoch int64) *signalBucket {
	if epoch <= nowEpoch-topk.Buckets || epoch <= 0 {
		return nil
	}
	b := &s.buckets[epoch%topk.Buckets]
	switch {
	case b.epoch == epoch:
	case b.epoch < epoch:
		b.epoch = epoch
		b.failures, b.successes = 0, 0
		clear(b.users)
		clear(b.sources)
		clear(b.slotUsers)
		clear(b.slotSuccesses)
		clear(b.spill)
	default:
		return nil
	}
	return b
}

func (b *signalBucket) slotRegs(slot int) []uint8 {
	return b.slotUsers[slot*hllSourceRegs : (slot+1)*hllSourceRegs]
}

func (s *attackSignals) hashUser(user authField) (uint64, bool) {
	if (user.kind != kindString && user.kind != kindNumber) || len(user.val) == 0 {
		return 0, false
	}
	return maphash.Bytes(s.seed, user.val), true
}

func (s *attackSignals) hashSource(a netip.Addr) uint64 {
	b := a.As16()
	return maphash.Bytes(s.seed, b[:])
}

// login is one login outcome, hashed.
type login struct {
	user, source    uint64
	hasUser, valid  bool
	epoch, nowEpoch int64
}

func (s *attackSignals) login(source netip.Addr, valid bool, user authField, at, now time.Time) login {
	l := login{valid: valid}
	l.user, l.hasUser = s.hashUser(user)
	if valid {
		l.source = s.hashSource(source)
	}
	l.epoch, l.nowEpoch = s.period(at, now)
	return l
}

// failure records a failed login of user from source (valid: an address
// was read) at time at, counting it in the failures' top-K too.
func (s *attackSignals) failure(top *topk.Sliding, source netip.Addr, valid bool, user authField, at, now time.Time) {
	l := s.login(source, valid, user, at, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, placed := top.Place(source, at, now)
	b := s.bucketLocked(l.epoch, l.nowEpoch)
	if b == nil {
		return
	}
	b.failures++
	if l.valid {
		hllInsert(b.sources, hllGlobalPrecision, l.source)
		s.sourceRuns.failure(l.source, l.epoch, topk.Buckets)
	}
	if placed && p.Epoch == b.epoch {
		reg := b.slotRegs(p.Slot)
		if p.Taken {
			hllMerge(b.spill, reg)
			clear(reg)
			b.slotSuccesses[p.Slot] = 0
		}
		if l.hasUser {
			hllInsert(reg, hllSourcePrecision, l.user)
		}
	} else if l.hasUser {
		hllInsert(b.spill, hllSourcePrecision, l.user)
	}
	if l.hasUser {
		hllInsert(b.users, hllGlobalPrecision, l.user)
		s.userRuns.failure(l.user, l.epoch, topk.Buckets)
	}
}

// success records a successful login of user from source at time at.
func (s *attackSignals) success(top *topk.Sliding, source netip.Addr, valid bool, user authField, at, now time.Time) {
	l := s.login(source, valid, user, at, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bucketLocked(l.epoch, l.nowEpoch)
	if b == nil {
		return
	}
	b.successes++
	if p, ok := top.Lookup(source, at, now); ok && p.Epoch == b.epoch {
		b.slotSuccesses[p.Slot]++
	}
	if l.hasUser && s.userRuns.success(l.user, l.epoch, topk.Buckets) >= s.minRun {
		s.afterFailures[0]++
	}
	if l.valid && s.sourceRuns.success(l.source, l.epoch, topk.Buckets) >= s.minRun {
		s.afterFailures[1]++
	}
}

// signalSnapshot is the state of the signals over the window at a scrape.
type signalSnapshot struct {
	// sourceUsers and sourceSuccesses follow the order of the reported top
	// sources; the other* fields cover every other source.
	sourceUsers     []float64
	sourceSuccesses []uint64
	otherUsers      float64
	distinctSources float64
	distinctUsers   float64
	failures        uint64
	successes       uint64
	afterFailures   [2]uint64
}

// snapshot merges the sub-windows of the window ending at now for the
// reported top sources.
func (s *attackSignals) snapshot(top *topk.Sliding, reported []topk.Count, now time.Time) signalSnapshot {
	index := make(map[netip.Addr]int, len(reported))
	for i, sc := range reported {
		index[sc.Key] = i
	}
	perSource := make([]uint8, (len(reported)+1)*hllSourceRegs) // the last: other
	regs := func(i int) []uint8 { return perSource[i*hllSourceRegs : (i+1)*hllSourceRegs] }
	other := len(reported)
	users := make([]uint8, hllGlobalRegs)
	sources := make([]uint8, hllGlobalRegs)
	snap := signalSnapshot{sourceSuccesses: make([]uint64, len(reported))}
	_, nowEpoch := s.period(now, now)

	s.mergeLocked(func() {
		top.Counters(now, func(p topk.Placement, key netip.Addr, _ uint64) {
			b := &s.buckets[p.Bucket]
			if b.epoch != p.Epoch {
				return
			}
			i, ok := index[key]
			if !ok {
				i = other
			} else {
				snap.sourceSuccesses[i] += b.slotSuccesses[p.Slot]
			}
			hllMerge(regs(i), b.slotRegs(p.Slot))
		})
		for i := range s.buckets {
			b := &s.buckets[i]
			if b.epoch <= nowEpoch-topk.Buckets || b.epoch > nowEpoch || b.epoch == 0 {
				continue
			}
			hllMerge(regs(other), b.spill)
			hllMerge(users, b.users)
			hllMerge(sources, b.sources)
			snap.failures += b.failures
			snap.successes += b.successes
		}
		snap.afterFailures = s.afterFailures
	})

	snap.sourceUsers = make([]float64, len(reported))
	for i := range reported {
		snap.sourceUsers[i] = hllRound(regs(i))
	}
	snap.otherUsers = hllRound(regs(other))
	snap.distinctUsers = hllRound(users)
	snap.distinctSources = hllRound(sources)
	return snap
}

// mergeLocked runs fn holding the lock.
func (s *attackSignals) mergeLocked(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// hllRound is the estimate as a whole number of distinct items.
func hllRound(reg []uint8) float64 {
	e := hllEstimate(reg)
	return float64(int64(e + 0.5))
}

// The pattern label values of warden_auth_source_pattern.
const (
	patternBruteForce = "brute_force"
	patternSpraying   = "spraying"
)

// collectSignals sends the attack signals for the reported top sources;
// spread is the failed logins in the window from every other source.
func (c *Collector) collectSignals(ch chan<- prometheus.Metric, top []topk.Count, spread uint64, now time.Time) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	t := &c.thresholds
	snap := c.signals.snapshot(c.failures, top, now)
	for i, sc := range top {
		label := c.sourceLabel(sc.Key)
		users := snap.sourceUsers[i]
		gauge(authSourceUsersDesc, users, label)
		bf, spray := classifySource(t, float64(sc.Count), users, float64(snap.sourceSuccesses[i]))
		gauge(authSourcePatternDesc, bool01(bf), label, patternBruteForce)
		gauge(authSourcePatternDesc, bool01(spray), label, patternSpraying)
	}
	gauge(authSourceUsersDesc, snap.otherUsers, authOther)
	gauge(authDistinctSourcesDesc, snap.distinctSources)
	gauge(authDistinctUsersDesc, snap.distinctUsers)
	ch <- prometheus.MustNewConstMetric(authAfterFailuresDesc, prometheus.CounterValue, float64(snap.afterFailures[0]), "user")
	ch <- prometheus.MustNewConstMetric(authAfterFailuresDesc, prometheus.CounterValue, float64(snap.afterFailures[1]), "source")
	if logins := snap.failures + snap.successes; logins > 0 {
		gauge(authSuccessRatioDesc, float64(snap.successes)/float64(logins))
	}
	// Stuffing is judged on the failures spread outside the reported
	// sources, so that one loud source (brute force, spraying: classified
	// on their own) does not make the rest look like stuffing.
	stuffing := spread > 0 &&
		snap.distinctSources >= float64(t.StuffingMinSources) &&
		snap.otherUsers >= float64(t.StuffingMinUsers) &&
		float64(snap.successes)/float64(snap.successes+spread) <= t.StuffingMaxSuccessRatio
	gauge(authStuffingDesc, bool01(stuffing))
}

// classifySource tells whether a source with failures failed logins for
// users distinct usernames and successes successful logins in the window
// is brute-forcing or spraying passwords.
func classifySource(t *Config, failures, users, successes float64) (bruteForce, spraying bool) {
	if failures == 0 || failures/(failures+successes) < t.PatternMinFailureRatio {
		return false, false
	}
	bruteForce = failures >= float64(t.BruteForceMinFailures) && users <= float64(t.BruteForceMaxUsers)
	spraying = users >= float64(t.SprayingMinUsers) && failures <= t.SprayingMaxFailuresPerUser*users
	return bruteForce, spraying
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
