// Package authsim simulates auth-service as seen from outside: its metrics,
// its health endpoint and its JSON log stream, with switches that make it
// fail, slow down, hold memory, turn unhealthy or come under a brute-force
// attack. It drives the exporter's tests and the end-to-end demo.
package authsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Limits of the switches, so that a typo cannot take the host down.
const (
	MaxLatency        = time.Minute
	MaxMemoryMB       = 4096
	MaxBruteForceRate = 100_000
	MaxRate           = 1_000_000
	maxFaultBody      = 64 << 10
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("300ms").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "300ms" or "1.5s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"300ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// BruteForce is a stream of failed logins from a few source addresses.
type BruteForce struct {
	Sources []string `json:"sources"`
	// Rate is failed logins per second, spread over the sources.
	Rate float64 `json:"rate"`
	// Accounts is how many accounts the attack guesses passwords for
	// (user-0000, user-0001, …); 0 means 3.
	Accounts int `json:"accounts,omitempty"`
}

// Fault is the set of runtime switches.
type Fault struct {
	// ErrorRate is the fraction (0..1) of requests answered with 500.
	ErrorRate float64 `json:"error_rate"`
	// Latency is added to every request.
	Latency Duration `json:"latency"`
	// MemoryMB is memory held (and touched, so that it is resident).
	MemoryMB   int        `json:"memory_mb"`
	BruteForce BruteForce `json:"brute_force"`
	// Unhealthy makes /health answer 503.
	Unhealthy bool `json:"unhealthy"`
	// The attacks and traffic patterns of attacks.go.
	Spraying Spraying `json:"spraying"`
	Stuffing Stuffing `json:"stuffing"`
	Takeover Takeover `json:"takeover"`
	Lockouts Lockouts `json:"lockouts"`
	NAT      NAT      `json:"nat"`
}

// Validate reports the first switch out of range.
func (f Fault) Validate() error {
	switch {
	case math.IsNaN(f.ErrorRate) || f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("error_rate: must be between 0 and 1, got %v", f.ErrorRate)
	case f.Latency < 0 || time.Duration(f.Latency) > MaxLatency:
		return fmt.Errorf("latency: must be between 0 and %v, got %v", MaxLatency, time.Duration(f.Latency))
	case f.MemoryMB < 0 || f.MemoryMB > MaxMemoryMB:
		return fmt.Errorf("memory_mb: must be between 0 and %d, got %d", MaxMemoryMB, f.MemoryMB)
	case math.IsNaN(f.BruteForce.Rate) || f.BruteForce.Rate < 0 || f.BruteForce.Rate > MaxBruteForceRate:
		return fmt.Errorf("brute_force.rate: must be between 0 and %d, got %v", MaxBruteForceRate, f.BruteForce.Rate)
	case f.BruteForce.Rate > 0 && len(f.BruteForce.Sources) == 0:
		return errors.New("brute_force.sources: required when brute_force.rate is set")
	case f.BruteForce.Accounts < 0 || f.BruteForce.Accounts > MaxAttackAccounts:
		return fmt.Errorf("brute_force.accounts: must be between 0 and %d, got %d", MaxAttackAccounts, f.BruteForce.Accounts)
	}
	for i, s := range f.BruteForce.Sources {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("brute_force.sources[%d]: %w", i, err)
		}
	}
	return f.validateAttacks()
}

// Config configures a simulator.
type Config struct {
	// InstanceID tells a restarted copy apart (logs, /health, metrics).
	InstanceID string
	// Rate is simulated requests per second of normal traffic.
	Rate float64
	// Log receives one JSON object per line; nil discards.
	Log io.Writer
	// Fault is the initial state of the switches.
	Fault Fault
	// Seed makes the traffic reproducible; 0 picks one.
	Seed   uint64
	Logger *slog.Logger
	// Clock stamps the log lines and expires sessions; nil is time.Now.
	// Tests replay traffic in virtual time with it.
	Clock func() time.Time
}

// Sim is a running simulator.
type Sim struct {
	cfg    Config
	logger *slog.Logger
	reg    *prometheus.Registry

	requests      *prometheus.CounterVec
	duration      prometheus.Histogram
	sessions      prometheus.Gauge
	jwtErrors     prometheus.Counter
	tokensIssued  prometheus.Counter
	failedLogins  prometheus.Counter
	instanceGauge *prometheus.GaugeVec

	mu          sync.Mutex // guards the fields below
	fault       Fault
	rng         *rand.Rand
	carry       float64 // fractional requests left from the last tick
	bruteCarry  float64
	memory      [][]byte
	sessionEnds []time.Time // expiry times of active sessions, in order
	now         func() time.Time
	attacks     attackState
	gateway     *Gateway // nil: no gateway (blocklist.go)

	logMu sync.Mutex
	log   io.Writer
}

// sessionTTL is how long a login keeps a session active.
const sessionTTL = 5 * time.Minute

// New builds a simulator; Run generates its traffic and Handler serves it.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Fault.Validate(); err != nil {
		return nil, err
	}
	if math.IsNaN(cfg.Rate) || cfg.Rate < 0 || cfg.Rate > MaxRate {
		return nil, fmt.Errorf("rate: must be between 0 and %d, got %v", MaxRate, cfg.Rate)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	s := &Sim{
		cfg:    cfg,
		logger: cfg.Logger,
		reg:    prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_requests_total", Help: "Requests handled, by HTTP status code.",
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "auth_request_duration_seconds", Help: "Time to handle a request.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		sessions:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "auth_active_sessions", Help: "Sessions currently active."}),
		jwtErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "auth_jwt_validation_errors_total", Help: "JWTs that failed validation."}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{Name: "jwt_tokens_issued_total", Help: "JWTs issued."}),
		failedLogins: prometheus.NewCounter(prometheus.CounterOpts{Name: "auth_failed_logins_total", Help: "Failed login attempts."}),
		instanceGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authsim_instance_info", Help: "The simulator instance; its id changes when a new copy starts.",
		}, []string{"instance_id"}),
		fault: cfg.Fault,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:   cfg.Clock,
		log:   cfg.Log,
	}
	for _, code := range []string{"200", "401", "403", "500"} {
		s.requests.WithLabelValues(code)
	}
	s.instanceGauge.WithLabelValues(cfg.InstanceID).Set(1)
	s.reg.MustRegister(s.requests, s.duration, s.sessions, s.jwtErrors, s.tokensIssued, s.failedLogins, s.instanceGauge,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	s.setMemory(cfg.Fault.MemoryMB)
	return s, nil
}

// Registry is the simulator's own metrics registry.
func (s *Sim) Registry() *prometheus.Registry { return s.reg }

// Fault returns the current switches.
func (s *Sim) Fault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	f.BruteForce.Sources = append([]string(nil), f.BruteForce.Sources...)
	return f
}

// SetFault replaces the switches.
func (s *Sim) SetFault(f Fault) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.fault = f
	s.attacks = attackState{}
	s.mu.Unlock()
	s.setMemory(f.MemoryMB)
	s.logger.Info("fault switches changed", "error_rate", f.ErrorRate, "latency", time.Duration(f.Latency),
		"memory_mb", f.MemoryMB, "brute_force_sources", f.BruteForce.Sources, "brute_force_rate", f.BruteForce.Rate, "unhealthy", f.Unhealthy,
		"spraying_rate", f.Spraying.Rate, "stuffing_rate", f.Stuffing.Rate, "takeover_rate", f.Takeover.Rate,
		"lockouts_rate", f.Lockouts.Rate, "nat_rate", f.NAT.Rate)
	return nil
}

// HeldMemoryBytes is the memory held by the memory_mb switch.
func (s *Sim) HeldMemoryBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.memory) << 20
}

func (s *Sim) setMemory(mb int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.memory) < mb {
		chunk := make([]byte, 1<<20)
		for i := 0; i < len(chunk); i += 4096 {
			chunk[i] = 1 // touch every page so that it is resident
		}
		s.memory = append(s.memory, chunk)
	}
	clear(s.memory[mb:])
	s.memory = s.memory[:mb]
}

// Run generates traffic at the configured rate, plus the brute-force
// pattern when switched on, until ctx ends.
func (s *Sim) Run(ctx context.Context) {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Generate(now.Sub(last))
			last = now
		}
	}
}

// logEntry is one log line, in the contract's field order.
type logEntry struct {
	Timestamp  string  `json:"timestamp"`
	Level      string  `json:"level"`
	Event      string  `json:"event"`
	IPAddress  string  `json:"ip_address"`
	UserID     string  `json:"user_id"`
	Action     string  `json:"action"`
	Resource   string  `json:"resource"`
	RiskScore  float64 `json:"risk_score"`
	InstanceID string  `json:"instance_id,omitempty"`
}

// outcome is the result of one simulated or real request.
type outcome struct {
	status   int
	duration time.Duration
	entries  []logEntry
}

// Generate simulates dt worth of traffic at once (Run calls it every tick;
// tests call it directly for exact counts).
func (s *Sim) Generate(dt time.Duration) {
	s.mu.Lock()
	s.carry += s.cfg.Rate * dt.Seconds()
	n := int(s.carry)
	s.carry -= float64(n)
	bf := s.fault.BruteForce
	s.bruteCarry += bf.Rate * dt.Seconds()
	nb := int(s.bruteCarry)
	s.bruteCarry -= float64(nb)
	if len(bf.Sources) == 0 {
		nb = 0
	}
	outs := make([]outcome, 0, n+nb)
	for range n {
		outs = append(outs, s.normalRequestLocked())
	}
	for range nb {
		src := bf.Sources[s.rng.IntN(len(bf.Sources))]
		if s.deniedLocked(src) {
			continue
		}
		accounts := bf.Accounts
		if accounts == 0 {
			accounts = 3
		}
		user := fmt.Sprintf("user-%04d", s.rng.IntN(accounts))
		o := s.loginLocked(src, user, false)
		if s.rng.Float64() < 0.1 && o.status == http.StatusUnauthorized {
			// The service's rate limiter catches some of the attack.
			e := o.entries[len(o.entries)-1]
			o.entries = append(o.entries, withEvent(e, "ip_blocked", "warn", 0.9))
		}
		outs = append(outs, o)
	}
	outs = s.attacksLocked(dt.Seconds(), outs)
	s.mu.Unlock()
	s.record(outs...)
}

// normalRequestLocked simulates one request of ordinary traffic: logins,
// token validations and the odd administrative action, from many sources.
func (s *Sim) normalRequestLocked() outcome {
	src := fmt.Sprintf("10.%d.%d.%d", s.rng.IntN(4), s.rng.IntN(256), 1+s.rng.IntN(254))
	user := fmt.Sprintf("user-%04d", s.rng.IntN(10_000))
	r := s.rng.Float64()
	switch {
	case r < 0.6:
		return s.personLoginLocked(&s.attacks.normalRetries, func() (string, string) { return src, user })
	case r < 0.95:
		return s.validateLocked(src, user)
	default:
		return s.adminLocked(src, user)
	}
}

func (s *Sim) baseLocked(src, user, action, resource string) (outcome, logEntry, bool) {
	o := outcome{status: http.StatusOK, duration: s.latencyLocked()}
	e := logEntry{Level: "info", IPAddress: src, UserID: user, Action: action, Resource: resource, RiskScore: math.Round(s.rng.Float64()*30) / 100}
	failed := s.rng.Float64() < s.fault.ErrorRate
	if failed {
		o.status = http.StatusInternalServerError
	}
	return o, e, failed
}

func (s *Sim) latencyLocked() time.Duration {
	// About 20 ms with a tail, plus the latency switch.
	base := time.Duration(float64(20*time.Millisecond) * math.Exp(s.rng.NormFloat64()*0.5))
	return base + time.Duration(s.fault.Latency)
}

func withEvent(e logEntry, event, level string, risk float64) logEntry {
	e.Event, e.Level = event, level
	if risk > 0 {
		e.RiskScore = risk
	}
	return e
}

// loginLocked simulates a login that succeeds when ok (and no error is
// injected).
func (s *Sim) loginLocked(src, user string, ok bool) outcome {
	o, e, failed := s.baseLocked(src, user, "login", "/api/v1/auth/login")
	o.entries = append(o.entries, withEvent(e, "authentication_attempt", "info", 0))
	switch {
	case failed:
		o.entries = append(o.entries, withEvent(e, "internal_error", "error", 0))
	case ok:
		o.entries = append(o.entries, withEvent(e, "authentication_success", "info", 0))
		s.sessionEnds = append(s.sessionEnds, s.now().Add(sessionTTL))
	default:
		o.status = http.StatusUnauthorized
		o.entries = append(o.entries, withEvent(e, "authentication_failed", "warn", 0.6))
	}
	return o
}

func (s *Sim) validateLocked(src, user string) outcome {
	o, e, failed := s.baseLocked(src, user, "validate_token", "/api/v1/auth/validate")
	if failed {
		return o
	}
	switch r := s.rng.Float64(); {
	case r < 0.02:
		o.status = http.StatusUnauthorized
		o.entries = append(o.entries, withEvent(e, "jwt_validation_error", "warn", 0.5))
	case r < 0.04:
		o.status = http.StatusUnauthorized
		o.entries = append(o.entries, withEvent(e, "invalid_token", "warn", 0.4))
	}
	return o
}

func (s *Sim) adminLocked(src, user string) outcome {
	o, e, failed := s.baseLocked(src, user, "admin", "/api/v1/admin/users")
	if failed {
		return o
	}
	switch r := s.rng.Float64(); {
	case r < 0.6:
		o.entries = append(o.entries, withEvent(e, "admin_action", "info", 0))
	case r < 0.75:
		o.entries = append(o.entries, withEvent(e, "configuration_change", "info", 0))
	case r < 0.93:
		// Ordinary traffic holds no privilege escalation: one pages
		// (PrivilegeEscalation), as a security incident.
		o.status = http.StatusForbidden
		o.entries = append(o.entries, withEvent(e, "unauthorized", "warn", 0.7))
	default:
		o.entries = append(o.entries, withEvent(e, "unusual_access_pattern", "warn", 0.8))
	}
	return o
}

// record updates the metrics and writes the log lines of finished
// requests.
func (s *Sim) record(outs ...outcome) {
	var buf bytes.Buffer
	ts := s.now().UTC().Format(time.RFC3339Nano)
	for _, o := range outs {
		s.requests.WithLabelValues(strconv.Itoa(o.status)).Inc()
		s.duration.Observe(o.duration.Seconds())
		for _, e := range o.entries {
			switch e.Event {
			case "authentication_success":
				s.tokensIssued.Inc()
			case "authentication_failed":
				s.failedLogins.Inc()
			case "jwt_validation_error":
				s.jwtErrors.Inc()
			}
			e.Timestamp, e.InstanceID = ts, s.cfg.InstanceID
			b, _ := json.Marshal(e) // plain strings and numbers: cannot fail
			buf.Write(b)
			buf.WriteByte('\n')
		}
	}
	s.mu.Lock()
	now := s.now()
	i := 0
	for i < len(s.sessionEnds) && !s.sessionEnds[i].After(now) {
		i++
	}
	s.sessionEnds = s.sessionEnds[i:]
	s.sessions.Set(float64(len(s.sessionEnds)))
	s.mu.Unlock()
	if buf.Len() == 0 {
		return
	}
	// One write per batch: a follower never sees half a line.
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if _, err := s.log.Write(buf.Bytes()); err != nil {
		s.logger.Warn("cannot write log lines", "err", err)
	}
}

// Handler serves /metrics, /health, the login endpoint and the admin
// switches.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", s.serveHealth)
	mux.HandleFunc("POST /api/v1/auth/login", s.serveLogin)
	mux.HandleFunc("GET /admin/fault", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Fault()) })
	mux.HandleFunc("POST /admin/fault", s.serveSetFault)
	if s.gateway != nil {
		mux.Handle("POST /-/reload", s.gateway)
		mux.Handle("GET /-/blocklist", s.gateway)
	}
	mux.HandleFunc("POST /admin/reset", func(w http.ResponseWriter, r *http.Request) {
		_ = s.SetFault(Fault{})
		writeJSON(w, http.StatusOK, s.Fault())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Sim) serveHealth(w http.ResponseWriter, r *http.Request) {
	if s.Fault().Unhealthy {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "instance_id": s.cfg.InstanceID})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "healthy", "instance_id": s.cfg.InstanceID})
}

// serveSetFault merges the posted switches into the current ones: fields
// left out keep their value.
func (s *Sim) serveSetFault(w http.ResponseWriter, r *http.Request) {
	f := s.Fault()
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFaultBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid fault JSON: " + err.Error()})
		return
	}
	if err := s.SetFault(f); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.Fault())
}

// loginRequest is the body of POST /api/v1/auth/login.
type loginRequest struct {
	UserID   string `json:"user_id"`
	Password string `json:"password"`
}

// serveLogin handles a real login: the latency switch delays it, the error
// rate fails it, and the password "wrong" (or none) is refused.
func (s *Sim) serveLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid login JSON"})
		return
	}
	src := r.RemoteAddr
	if host, _, err := net.SplitHostPort(src); err == nil {
		src = host
	}
	s.mu.Lock()
	if s.deniedLocked(src) {
		s.mu.Unlock()
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "blocked at the gateway"})
		return
	}
	o := s.loginLocked(src, req.UserID, req.Password != "" && req.Password != "wrong")
	latency := time.Duration(s.fault.Latency)
	s.mu.Unlock()
	start := time.Now()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
		}
	}
	o.duration = time.Since(start)
	s.record(o)
	switch o.status {
	case http.StatusOK:
		writeJSON(w, o.status, map[string]string{"token": "simulated." + req.UserID})
	default:
		writeJSON(w, o.status, map[string]string{"error": http.StatusText(o.status)})
	}
}
