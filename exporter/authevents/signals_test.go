package authevents

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/authsim"
	"github.com/warden-sre/warden/internal/logfollow"
)

// simScenario is traffic the simulator generates into a log file that the
// collector follows.
type simScenario struct {
	rate    float64 // normal requests per second
	fault   authsim.Fault
	seconds int // of simulated traffic, generated in 1 s steps
}

// followSim writes the scenario's log with the simulator, lets the
// collector read it through the file follower, and returns a scrape.
func followSim(t *testing.T, sc simScenario) map[string][]*authTestMetric {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sim, err := authsim.New(authsim.Config{InstanceID: "sim", Rate: sc.rate, Log: f, Seed: 11, Fault: sc.fault})
	if err != nil {
		t.Fatal(err)
	}
	cfg := authTestConfig(t, fmt.Sprintf("auth: {files: [%q], from_beginning: true, poll_interval: 10ms}", path))
	c, err := New(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for range sc.seconds {
		sim.Generate(time.Second)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	waitAuthLines(t, c, uint64(bytes.Count(data, []byte("\n"))))
	pc := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
	mfs := gatherAuth(t, pc)
	promtoolCheckMetrics(t, pc)
	return mfs
}

// metricValue returns the value of the series of name with the given
// label values (name=value pairs), or NaN when absent.
func metricValue(mfs map[string][]*authTestMetric, name string, labels ...string) float64 {
next:
	for _, m := range mfs[name] {
		for i := 0; i+1 < len(labels); i += 2 {
			if m.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return m.value
	}
	return math.NaN()
}

// firingPatterns lists the sources and patterns at 1.
func firingPatterns(mfs map[string][]*authTestMetric) []string {
	var out []string
	for _, m := range mfs["warden_auth_source_pattern"] {
		if m.value != 0 {
			out = append(out, m.labels["source"]+" "+m.labels["pattern"])
		}
	}
	return out
}

// TestAttackSignalsFromSimulatorLogs drives each attack of the simulator,
// among normal traffic, through the file follower and checks the signals
// it must raise and the ones it must not.
func TestAttackSignalsFromSimulatorLogs(t *testing.T) {
	const attacker = "203.0.113.50"
	tests := []struct {
		name  string
		sc    simScenario
		check func(t *testing.T, mfs map[string][]*authTestMetric)
	}{{
		name: "normal traffic with typos and a NAT raises nothing",
		sc: simScenario{rate: 200, seconds: 60,
			fault: authsim.Fault{NAT: authsim.NAT{Source: "192.0.2.10", Users: 1000, Rate: 50}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if got := firingPatterns(mfs); len(got) != 0 {
				t.Errorf("patterns raised by normal traffic: %v", got)
			}
			// The NAT is the top failing source, with many users, and
			// not classified.
			if n := metricValue(mfs, "warden_auth_source_distinct_users", "source", "192.0.2.10"); !(n >= 20) {
				t.Errorf("distinct users failing behind the NAT = %v, want it tracked with at least 20", n)
			}
			for _, kind := range []string{"user", "source"} {
				if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", kind); v != 0 {
					t.Errorf("success after failures (%s) = %v for typos", kind, v)
				}
			}
			if v := metricValue(mfs, "warden_auth_credential_stuffing"); v != 0 {
				t.Errorf("credential stuffing = %v for normal traffic", v)
			}
			if r := metricValue(mfs, "warden_auth_window_success_ratio"); !(r > 0.85) {
				t.Errorf("window success ratio = %v, want above 0.85", r)
			}
		},
	}, {
		name: "password spraying from one source across 500 accounts",
		sc: simScenario{rate: 200, seconds: 10,
			fault: authsim.Fault{Spraying: authsim.Spraying{Source: attacker, Accounts: 500, Rate: 50}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if v := metricValue(mfs, "warden_auth_source_pattern", "source", attacker, "pattern", "spraying"); v != 1 {
				t.Errorf("spraying pattern of %s = %v, want 1", attacker, v)
			}
			if v := metricValue(mfs, "warden_auth_source_pattern", "source", attacker, "pattern", "brute_force"); v != 0 {
				t.Errorf("brute_force pattern of %s = %v, want 0", attacker, v)
			}
			if got := firingPatterns(mfs); len(got) != 1 {
				t.Errorf("patterns raised: %v, want only the sprayer's", got)
			}
			// Within 4 standard errors of the 2^8-register sketch (6.5 %).
			if n := metricValue(mfs, "warden_auth_source_distinct_users", "source", attacker); math.Abs(n-500) > 130 {
				t.Errorf("distinct users of the sprayer = %v, want 500 ± 130", n)
			}
			if v := metricValue(mfs, "warden_auth_failed_logins_by_source", "source", attacker); v != 500 {
				t.Errorf("failed logins of the sprayer = %v, want 500", v)
			}
			if v := metricValue(mfs, "warden_auth_credential_stuffing"); v != 0 {
				t.Errorf("credential stuffing = %v for one source", v)
			}
		},
	}, {
		name: "brute force from one source on three accounts",
		sc: simScenario{rate: 200, seconds: 5,
			fault: authsim.Fault{BruteForce: authsim.BruteForce{Sources: []string{attacker}, Rate: 20}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if v := metricValue(mfs, "warden_auth_source_pattern", "source", attacker, "pattern", "brute_force"); v != 1 {
				t.Errorf("brute_force pattern of %s = %v, want 1", attacker, v)
			}
			if v := metricValue(mfs, "warden_auth_source_pattern", "source", attacker, "pattern", "spraying"); v != 0 {
				t.Errorf("spraying pattern of %s = %v, want 0", attacker, v)
			}
			// 3, or 2 when two of the hashed names share a register.
			if n := metricValue(mfs, "warden_auth_source_distinct_users", "source", attacker); n != 3 && n != 2 {
				t.Errorf("distinct users of the brute forcer = %v, want 3", n)
			}
		},
	}, {
		name: "credential stuffing from 2000 sources across 10000 accounts",
		sc: simScenario{rate: 200, seconds: 60,
			fault: authsim.Fault{Stuffing: authsim.Stuffing{Sources: 2000, Accounts: 10_000, Rate: 250}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if v := metricValue(mfs, "warden_auth_credential_stuffing"); v != 1 {
				t.Errorf("credential stuffing = %v, want 1 (distinct sources %v, users %v, success ratio %v)", v,
					metricValue(mfs, "warden_auth_distinct_sources"), metricValue(mfs, "warden_auth_distinct_users_failed"),
					metricValue(mfs, "warden_auth_window_success_ratio"))
			}
			if n := metricValue(mfs, "warden_auth_distinct_sources"); n < 2000 {
				t.Errorf("distinct failing sources = %v, want at least the 2000 attackers", n)
			}
			if n := metricValue(mfs, "warden_auth_distinct_users_failed"); n < 9500 {
				t.Errorf("distinct failing users = %v, want about the 10000 accounts and more", n)
			}
			if got := firingPatterns(mfs); len(got) != 0 {
				t.Errorf("per-source patterns raised by stuffing (each source is small): %v", got)
			}
			if n := metricValue(mfs, "warden_auth_source_distinct_users", "source", "other"); n < 5000 {
				t.Errorf("distinct users of the sources outside the top K = %v, want most of the accounts", n)
			}
		},
	}, {
		// Most logins in the window fail, and failing users and sources
		// are many, but the failures are one source's: brute force, not
		// stuffing.
		name: "a loud brute force among busy normal traffic is not stuffing",
		sc: simScenario{rate: 1000, seconds: 60,
			fault: authsim.Fault{BruteForce: authsim.BruteForce{Sources: []string{attacker}, Rate: 2000}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if r := metricValue(mfs, "warden_auth_window_success_ratio"); !(r < 0.5) {
				t.Fatalf("window success ratio = %v; the scenario needs most logins to fail", r)
			}
			if n := metricValue(mfs, "warden_auth_distinct_sources"); n < 500 {
				t.Fatalf("distinct failing sources = %v; the scenario needs at least 500", n)
			}
			if n := metricValue(mfs, "warden_auth_distinct_users_failed"); n < 2000 {
				t.Fatalf("distinct failing users = %v; the scenario needs at least 2000", n)
			}
			if v := metricValue(mfs, "warden_auth_credential_stuffing"); v != 0 {
				t.Errorf("credential stuffing = %v for one brute-forcing source", v)
			}
			if v := metricValue(mfs, "warden_auth_source_pattern", "source", attacker, "pattern", "brute_force"); v != 1 {
				t.Errorf("brute_force pattern of %s = %v, want 1", attacker, v)
			}
		},
	}, {
		name: "account takeover: failures then a success",
		sc: simScenario{rate: 200, seconds: 3,
			fault: authsim.Fault{Takeover: authsim.Takeover{Source: attacker, User: "victim", Failures: 10, Rate: 20}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			for _, kind := range []string{"user", "source"} {
				if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", kind); v != 1 {
					t.Errorf("success after failures (%s) = %v, want 1", kind, v)
				}
			}
			if got := firingPatterns(mfs); len(got) != 0 {
				t.Errorf("patterns raised by 10 failures: %v", got)
			}
		},
	}, {
		name: "lockouts",
		sc:   simScenario{rate: 200, seconds: 2, fault: authsim.Fault{Lockouts: authsim.Lockouts{Rate: 5}}},
		check: func(t *testing.T, mfs map[string][]*authTestMetric) {
			if v := metricValue(mfs, "warden_auth_events_total", "event", "account_locked"); v != 10 {
				t.Errorf("account_locked events = %v, want 10", v)
			}
			if got := firingPatterns(mfs); len(got) != 0 {
				t.Errorf("patterns raised by lockouts: %v", got)
			}
			for _, kind := range []string{"user", "source"} {
				if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", kind); v != 0 {
					t.Errorf("success after failures (%s) = %v, want 0", kind, v)
				}
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mfs := followSim(t, tt.sc)
			// Every simulator line carries a risk score.
			lines := metricValue(mfs, "warden_auth_log_lines_total")
			if n := riskCount(mfs); n != lines {
				t.Errorf("risk scores observed = %v, lines = %v", n, lines)
			}
			tt.check(t, mfs)
		})
	}
}

// riskCount is the sample count of warden_auth_risk_score.
func riskCount(mfs map[string][]*authTestMetric) float64 {
	return metricValue(mfs, "warden_auth_risk_score")
}

// TestSprayingDetectionDelay replays normal traffic and then a spraying
// attack in virtual time (100 ms steps, a scrape after each) and measures
// how many of the sprayer's failed logins, and how much time, it takes
// until warden_auth_source_pattern{pattern="spraying"} turns to 1.
func TestSprayingDetectionDelay(t *testing.T) {
	const sprayer = "203.0.113.77"
	clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	cfg := authTestConfig(t, "auth: {files: [unused.log]}")
	c, err := newCollector(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c.now = now
	split := logfollow.NewSplitter(cfg.MaxLineBytes)
	sim, err := authsim.New(authsim.Config{InstanceID: "sim", Rate: 200, Seed: 5, Clock: now,
		Log: writerFunc(func(p []byte) { split.Write(p, c) })})
	if err != nil {
		t.Fatal(err)
	}
	const step = 100 * time.Millisecond
	for range 300 { // 30 s of normal traffic first
		sim.Generate(step)
		clock = clock.Add(step)
	}
	const rate = 10 // failed logins per second, one account each
	if err := sim.SetFault(authsim.Fault{Spraying: authsim.Spraying{Source: sprayer, Accounts: 500, Rate: rate}}); err != nil {
		t.Fatal(err)
	}
	start, startLines := clock, c.lines.Load()
	pc := &exportertest.Adapter{C: c, Timeout: 5 * time.Second}
	for i := 1; i <= 600; i++ {
		sim.Generate(step)
		clock = clock.Add(step)
		mfs := gatherAuth(t, pc)
		if metricValue(mfs, "warden_auth_source_pattern", "source", sprayer, "pattern", "spraying") == 1 {
			failures := metricValue(mfs, "warden_auth_failed_logins_by_source", "source", sprayer)
			t.Logf("spraying detected after %v of virtual time, %v failed logins from the sprayer, %d log lines in all",
				clock.Sub(start), failures, c.lines.Load()-startLines)
			// The pattern needs spraying_min_users (20) distinct users:
			// allow the sketch's error (4 % at 20, here 5 standard
			// errors either way), nothing more.
			if failures < 16 || failures > 26 {
				t.Errorf("detected after %v failed logins, want 20 ± 4", failures)
			}
			return
		}
	}
	t.Fatal("spraying not detected within 60 s of virtual time")
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestClassifySource(t *testing.T) {
	cfg := defaultAuthConfig()
	tests := []struct {
		name                         string
		failures, users, successes   float64
		wantBruteForce, wantSpraying bool
	}{
		{"brute force: 20 failures on one account", 20, 1, 0, true, false},
		{"brute force on three accounts", 100, 3, 2, true, false},
		{"too few failures for brute force", 19, 1, 0, false, false},
		{"spraying: 500 accounts once each", 500, 500, 1, false, true},
		{"spraying at three tries per account", 60, 20, 0, false, true},
		{"four tries per account is not spraying", 80, 20, 0, false, false},
		{"19 accounts is not spraying yet", 19, 19, 0, false, false},
		{"a NAT: many accounts, mostly successes", 300, 250, 3000, false, false},
		{"a NAT's failures at exactly half its logins", 300, 250, 300, false, true},
		{"between the patterns: 10 accounts", 40, 10, 0, false, false},
		{"no failures", 0, 0, 10, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bf, sp := classifySource(&cfg, tt.failures, tt.users, tt.successes)
			if bf != tt.wantBruteForce || sp != tt.wantSpraying {
				t.Errorf("classify(%v failures, %v users, %v successes) = brute_force %v spraying %v, want %v %v",
					tt.failures, tt.users, tt.successes, bf, sp, tt.wantBruteForce, tt.wantSpraying)
			}
		})
	}
}

// TestAttackSignalsLeaveWithTheWindow sprays from one source, then moves
// the clock: the signals hold while the lines are in the window and are
// gone (the source no longer reported, counts at 0) once the window has
// passed, while the counters keep their totals.
func TestAttackSignalsLeaveWithTheWindow(t *testing.T) {
	cfg := authTestConfig(t, "auth: {files: [unused.log], window: 1m}")
	c, err := newCollector(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return clock }
	for i := range 30 {
		c.Line(fmt.Appendf(nil, `{"event":"authentication_failed","ip_address":"203.0.113.5","user_id":"u%d"}`, i))
	}
	for range 6 {
		c.Line([]byte(`{"event":"authentication_failed","ip_address":"203.0.113.6","user_id":"admin"}`))
	}
	c.Line([]byte(`{"event":"authentication_success","ip_address":"203.0.113.6","user_id":"admin"}`))
	pc := &exportertest.Adapter{C: c, Timeout: time.Second}
	mfs := gatherAuth(t, pc)
	if v := metricValue(mfs, "warden_auth_source_pattern", "source", "203.0.113.5", "pattern", "spraying"); v != 1 {
		t.Errorf("spraying = %v, want 1", v)
	}
	// Sketch estimates: usernames are hashed with a random seed, so a
	// count may be off by the sketch's error (4 % at 30).
	if v := metricValue(mfs, "warden_auth_source_distinct_users", "source", "203.0.113.5"); math.Abs(v-30) > 5 {
		t.Errorf("distinct users = %v, want 30 ± 5", v)
	}
	if v := metricValue(mfs, "warden_auth_distinct_sources"); v != 2 {
		t.Errorf("distinct sources = %v, want 2", v)
	}
	if v := metricValue(mfs, "warden_auth_distinct_users_failed"); math.Abs(v-31) > 1 {
		t.Errorf("distinct users failed = %v, want 31 ± 1", v)
	}
	for _, kind := range []string{"user", "source"} {
		if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", kind); v != 1 {
			t.Errorf("success after failures (%s) = %v, want 1", kind, v)
		}
	}
	if v := metricValue(mfs, "warden_auth_window_success_ratio"); math.Abs(v-1.0/37) > 1e-9 {
		t.Errorf("success ratio = %v, want 1/37", v)
	}

	clock = clock.Add(time.Minute)
	mfs = gatherAuth(t, pc)
	if got := mfs["warden_auth_source_pattern"]; len(got) != 0 {
		t.Errorf("patterns after the window: %d series", len(got))
	}
	for _, name := range []string{"warden_auth_distinct_sources", "warden_auth_distinct_users_failed"} {
		if v := metricValue(mfs, name); v != 0 {
			t.Errorf("%s after the window = %v, want 0", name, v)
		}
	}
	if v := metricValue(mfs, "warden_auth_source_distinct_users", "source", "other"); v != 0 {
		t.Errorf("other's distinct users after the window = %v, want 0", v)
	}
	if v := metricValue(mfs, "warden_auth_window_success_ratio"); !math.IsNaN(v) {
		t.Errorf("success ratio without logins in the window = %v, want absent", v)
	}
	if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", "user"); v != 1 {
		t.Errorf("counter after the window = %v, want 1", v)
	}
	// A failure run ends with the window too: a success now follows none.
	c.Line([]byte(`{"event":"authentication_failed","ip_address":"203.0.113.6","user_id":"admin"}`))
	c.Line([]byte(`{"event":"authentication_success","ip_address":"203.0.113.6","user_id":"admin"}`))
	mfs = gatherAuth(t, pc)
	if v := metricValue(mfs, "warden_auth_success_after_failures_total", "kind", "user"); v != 1 {
		t.Errorf("success after one failure counted: %v, want still 1", v)
	}
}

// TestAuthEventAliases maps the log names auth-service deployments use onto
// the canonical events, with auth.events overriding an alias.
func TestAuthEventAliases(t *testing.T) {
	cfg := authTestConfig(t, "auth: {files: [unused.log], events: {user_registered: other, mfa_denied: mfa_failed}}")
	c, err := newCollector(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{"account_locked", "account_lockout", "user_locked", "mfa_failed", "mfa_failure", "mfa_denied",
		"password_reset", "password_reset_requested", "registration", "account_created", "user_registered", "login_failed"} {
		c.Line(fmt.Appendf(nil, `{"event":%q,"ip_address":"198.51.100.1","user_id":"u","risk_score":0.9}`, ev))
	}
	mfs := gatherAuth(t, &exportertest.Adapter{C: c, Timeout: time.Second})
	for event, want := range map[string]float64{"account_locked": 3, "mfa_failed": 3, "password_reset_requested": 2,
		"registration": 2, "other": 1, "authentication_failed": 1} {
		if got := metricValue(mfs, "warden_auth_events_total", "event", event); got != want {
			t.Errorf("events_total{event=%q} = %v, want %v", event, got, want)
		}
	}
	if got := riskCount(mfs); got != 12 {
		t.Errorf("risk scores observed = %v, want 12", got)
	}
}
