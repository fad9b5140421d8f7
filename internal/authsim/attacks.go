package authsim

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
)

// Limits of the attack switches.
const (
	MaxAttackRate     = 100_000
	MaxAttackAccounts = 1_000_000
	MaxStuffSources   = 65_536
	MaxTakeoverTries  = 100_000
	maxTypoRetries    = 1024
)

// Spraying tries one password on many accounts from one source: each
// account once, in turn, then over again.
type Spraying struct {
	Source   string `json:"source"`
	Accounts int    `json:"accounts"`
	// Rate is failed logins per second.
	Rate float64 `json:"rate"`
}

// Stuffing tries leaked username and password pairs from many sources
// (addresses of 198.18.0.0/15): each account once or twice, each try from
// a source picked at random, then over again.
type Stuffing struct {
	Sources  int `json:"sources"`
	Accounts int `json:"accounts"`
	// Rate is login attempts per second; all fail.
	Rate float64 `json:"rate"`
}

// Takeover guesses one account's password from one source: Failures
// failed logins, then a success, once.
type Takeover struct {
	Source   string  `json:"source"`
	User     string  `json:"user"`
	Failures int     `json:"failures"`
	Rate     float64 `json:"rate"`
}

// Lockouts locks accounts out: each lockout is five failed logins for an
// account from one source, then its account_locked event.
type Lockouts struct {
	// Rate is lockouts per second.
	Rate float64 `json:"rate"`
}

// NAT is ordinary traffic of many people behind one address: logins that
// mostly succeed, with the odd typo retried.
type NAT struct {
	Source string `json:"source"`
	Users  int    `json:"users"`
	// Rate is logins per second.
	Rate float64 `json:"rate"`
}

// lockoutFailures is the failed logins that lock an account.
const lockoutFailures = 5

func validRate(name string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > MaxAttackRate {
		return fmt.Errorf("%s: must be between 0 and %d, got %v", name, MaxAttackRate, v)
	}
	return nil
}

func validSource(name, s string, required bool) error {
	if s == "" && !required {
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func validCount(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s: must be between %d and %d, got %d", name, lo, hi, v)
	}
	return nil
}

// validateAttacks reports the attack switches out of range.
func (f Fault) validateAttacks() error {
	sp, st, tk, nat := f.Spraying, f.Stuffing, f.Takeover, f.NAT
	checks := []error{
		validRate("spraying.rate", sp.Rate),
		validSource("spraying.source", sp.Source, sp.Rate > 0),
		validRate("stuffing.rate", st.Rate),
		validRate("takeover.rate", tk.Rate),
		validSource("takeover.source", tk.Source, tk.Rate > 0),
		validRate("lockouts.rate", f.Lockouts.Rate),
		validRate("nat.rate", nat.Rate),
		validSource("nat.source", nat.Source, nat.Rate > 0),
	}
	if sp.Rate > 0 || sp.Accounts != 0 {
		checks = append(checks, validCount("spraying.accounts", sp.Accounts, 1, MaxAttackAccounts))
	}
	if st.Rate > 0 || st.Sources != 0 || st.Accounts != 0 {
		checks = append(checks, validCount("stuffing.sources", st.Sources, 1, MaxStuffSources),
			validCount("stuffing.accounts", st.Accounts, 1, MaxAttackAccounts))
	}
	if tk.Rate > 0 || tk.Failures != 0 {
		checks = append(checks, validCount("takeover.failures", tk.Failures, 1, MaxTakeoverTries))
		if tk.User == "" {
			checks = append(checks, errors.New("takeover.user: required"))
		}
	}
	if nat.Rate > 0 || nat.Users != 0 {
		checks = append(checks, validCount("nat.users", nat.Users, 1, MaxAttackAccounts))
	}
	return errors.Join(checks...)
}

// attackState is the progress of the attacks; SetFault starts them over.
type attackState struct {
	sprayCarry, stuffCarry, takeoverCarry, lockoutCarry, natCarry float64

	sprayNext     int
	stuffNext     int
	stuffAgain    bool // the current stuffing account gets a second try
	takeoverTries int  // logins of the takeover so far (done past Failures)
	normalRetries []typoRetry
	natRetries    []typoRetry
}

// typoRetry is a person who mistyped a password and tries again.
type typoRetry struct {
	src, user string
}

// take returns how many events of rate per second fall into dt seconds,
// keeping the fraction in carry.
func take(carry *float64, rate, seconds float64) int {
	*carry += rate * seconds
	n := int(*carry)
	*carry -= float64(n)
	return n
}

// stuffSource is the i-th stuffing source, in 198.18.0.0/15.
func stuffSource(i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+i/(254*256), i/254%256, 1+i%254)
}

// attacksLocked appends dt seconds of the switched-on attacks and of the
// NAT's traffic.
func (s *Sim) attacksLocked(seconds float64, outs []outcome) []outcome {
	f, st := s.fault, &s.attacks
	// A source the gateway denies never reaches the service.
	if n := take(&st.sprayCarry, f.Spraying.Rate, seconds); f.Spraying.Accounts > 0 && !s.deniedLocked(f.Spraying.Source) {
		for range n {
			user := fmt.Sprintf("user-%04d", st.sprayNext)
			st.sprayNext = (st.sprayNext + 1) % f.Spraying.Accounts
			outs = append(outs, s.loginLocked(f.Spraying.Source, user, false))
		}
	}
	if n := take(&st.stuffCarry, f.Stuffing.Rate, seconds); f.Stuffing.Accounts > 0 {
		for range n {
			user := fmt.Sprintf("acct-%06d", st.stuffNext)
			src := stuffSource(s.rng.IntN(f.Stuffing.Sources))
			if s.deniedLocked(src) {
				continue
			}
			outs = append(outs, s.loginLocked(src, user, false))
			if st.stuffAgain || s.rng.IntN(2) == 0 {
				st.stuffNext = (st.stuffNext + 1) % f.Stuffing.Accounts
				st.stuffAgain = false
			} else {
				st.stuffAgain = true
			}
		}
	}
	if n := take(&st.takeoverCarry, f.Takeover.Rate, seconds); f.Takeover.Failures > 0 && !s.deniedLocked(f.Takeover.Source) {
		for range n {
			if st.takeoverTries > f.Takeover.Failures {
				break
			}
			outs = append(outs, s.loginLocked(f.Takeover.Source, f.Takeover.User, st.takeoverTries == f.Takeover.Failures))
			st.takeoverTries++
		}
	}
	for range take(&st.lockoutCarry, f.Lockouts.Rate, seconds) {
		src := fmt.Sprintf("10.%d.%d.%d", s.rng.IntN(4), s.rng.IntN(256), 1+s.rng.IntN(254))
		user := fmt.Sprintf("user-%04d", s.rng.IntN(10_000))
		for range lockoutFailures {
			outs = append(outs, s.loginLocked(src, user, false))
		}
		o := &outs[len(outs)-1]
		if n := len(o.entries); n > 0 {
			o.entries = append(o.entries, withEvent(o.entries[n-1], "account_locked", "warn", 0.7))
		}
	}
	if n := take(&st.natCarry, f.NAT.Rate, seconds); f.NAT.Users > 0 {
		for range n {
			outs = append(outs, s.personLoginLocked(&st.natRetries, func() (string, string) {
				return f.NAT.Source, fmt.Sprintf("nat-user-%05d", s.rng.IntN(f.NAT.Users))
			}))
		}
	}
	return outs
}

// personLoginLocked is a login by a person: 8 % of new logins mistype the
// password and are retried by a later login of the same person from the
// same address, which succeeds. One typo, not two: a person failing twice
// within seconds looks, to a per-source rate over a window as short as the
// demo's (10 s), like a source guessing passwords.
func (s *Sim) personLoginLocked(retries *[]typoRetry, pick func() (src, user string)) outcome {
	if n := len(*retries); n > 0 && s.rng.IntN(2) == 0 {
		r := (*retries)[0]
		*retries = (*retries)[1:]
		return s.loginLocked(r.src, r.user, true)
	}
	src, user := pick()
	ok := s.rng.Float64() < 0.92
	if !ok && len(*retries) < maxTypoRetries {
		*retries = append(*retries, typoRetry{src: src, user: user})
	}
	return s.loginLocked(src, user, ok)
}
