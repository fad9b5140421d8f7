package authsim

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// logins is the login outcomes of a log, in order.
type loginLine struct{ event, src, user string }

func loginLines(t *testing.T, logs *syncBuffer) []loginLine {
	t.Helper()
	var out []loginLine
	for _, l := range logs.lines(t) {
		switch ev := l["event"].(string); ev {
		case "authentication_failed", "authentication_success", "account_locked":
			out = append(out, loginLine{ev, l["ip_address"].(string), l["user_id"].(string)})
		}
	}
	return out
}

// TestAttacksGenerateTheirPatterns generates each attack alone and checks
// the shape of its log lines exactly.
func TestAttacksGenerateTheirPatterns(t *testing.T) {
	tests := []struct {
		name    string
		fault   Fault
		seconds int
		check   func(t *testing.T, ls []loginLine)
	}{{
		name:    "spraying: one source, each of 500 accounts once",
		fault:   Fault{Spraying: Spraying{Source: "203.0.113.50", Accounts: 500, Rate: 50}},
		seconds: 10,
		check: func(t *testing.T, ls []loginLine) {
			users := map[string]int{}
			for _, l := range ls {
				if l.event != "authentication_failed" || l.src != "203.0.113.50" {
					t.Fatalf("unexpected line %+v", l)
				}
				users[l.user]++
			}
			if len(ls) != 500 || len(users) != 500 {
				t.Errorf("%d failed logins for %d accounts, want 500 and 500", len(ls), len(users))
			}
		},
	}, {
		name:    "stuffing: 2000 sources, each account once or twice",
		fault:   Fault{Stuffing: Stuffing{Sources: 2000, Accounts: 10_000, Rate: 1200}},
		seconds: 10,
		check: func(t *testing.T, ls []loginLine) {
			stuffNet := netip.MustParsePrefix("198.18.0.0/15")
			users, sources, twice := map[string]int{}, map[string]bool{}, 0
			for _, l := range ls {
				if l.event != "authentication_failed" || !stuffNet.Contains(netip.MustParseAddr(l.src)) {
					t.Fatalf("unexpected line %+v", l)
				}
				users[l.user]++
				sources[l.src] = true
			}
			for u, n := range users {
				if n > 2 {
					t.Errorf("%s tried %d times, want 1 or 2", u, n)
				}
				if n == 2 {
					twice++
				}
			}
			if len(ls) != 12_000 || len(sources) < 1900 || len(sources) > 2000 {
				t.Errorf("%d failed logins from %d sources, want 12000 from about 2000", len(ls), len(sources))
			}
			if twice < len(users)/3 || twice > 2*len(users)/3 {
				t.Errorf("%d of %d accounts tried twice, want about half", twice, len(users))
			}
		},
	}, {
		name:    "takeover: 10 failures, then one success, then nothing",
		fault:   Fault{Takeover: Takeover{Source: "203.0.113.66", User: "victim", Failures: 10, Rate: 20}},
		seconds: 5,
		check: func(t *testing.T, ls []loginLine) {
			if len(ls) != 11 {
				t.Fatalf("%d login lines, want 11: %+v", len(ls), ls)
			}
			for i, l := range ls {
				want := "authentication_failed"
				if i == 10 {
					want = "authentication_success"
				}
				if l != (loginLine{want, "203.0.113.66", "victim"}) {
					t.Errorf("line %d = %+v, want %s of victim from 203.0.113.66", i, l, want)
				}
			}
		},
	}, {
		name:    "lockouts: five failures of one account, then account_locked",
		fault:   Fault{Lockouts: Lockouts{Rate: 3}},
		seconds: 2,
		check: func(t *testing.T, ls []loginLine) {
			if len(ls) != 6*6 {
				t.Fatalf("%d lines, want 36", len(ls))
			}
			for i := 0; i < len(ls); i += 6 {
				first := ls[i]
				for j, l := range ls[i : i+6] {
					want := "authentication_failed"
					if j == 5 {
						want = "account_locked"
					}
					if l.event != want || l.src != first.src || l.user != first.user {
						t.Errorf("lockout %d line %d = %+v, want %s of %s from %s", i/6, j, l, want, first.user, first.src)
					}
				}
			}
		},
	}, {
		name:    "NAT: many people behind one address, typos retried until success",
		fault:   Fault{NAT: NAT{Source: "192.0.2.10", Users: 1000, Rate: 100}},
		seconds: 30,
		check: func(t *testing.T, ls []loginLine) {
			checkPeople(t, ls, 3000)
			for _, l := range ls {
				if l.src != "192.0.2.10" {
					t.Fatalf("NAT login from %s", l.src)
				}
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, logs := startSim(t, Config{Fault: tt.fault})
			for range tt.seconds {
				s.Generate(time.Second)
			}
			tt.check(t, loginLines(t, logs))
		})
	}
}

// checkPeople checks logins of people: mostly successes, and a person who
// failed succeeds later (unless the traffic ended first), after at most two
// failures in a row.
func checkPeople(t *testing.T, ls []loginLine, want int) {
	t.Helper()
	type who struct{ src, user string }
	pending := map[who]int{}
	var failed, succeeded, retried int
	for _, l := range ls {
		k := who{l.src, l.user}
		switch l.event {
		case "authentication_failed":
			failed++
			pending[k]++
			if pending[k] > 1 {
				t.Errorf("%v failed %d times in a row", k, pending[k])
			}
		case "authentication_success":
			succeeded++
			if pending[k] > 0 {
				retried++
			}
			delete(pending, k)
		}
	}
	if failed+succeeded != want {
		t.Errorf("%d logins, want %d", failed+succeeded, want)
	}
	if ratio := float64(succeeded) / float64(want); ratio < 0.85 {
		t.Errorf("success ratio %.2f, want people to mostly succeed", ratio)
	}
	if retried == 0 || len(pending) > 20 {
		t.Errorf("%d typos retried to success, %d left failing", retried, len(pending))
	}
}

// TestNormalTrafficRetriesTypos checks that ordinary logins that fail are
// typos: the same person retries from the same address and succeeds.
func TestNormalTrafficRetriesTypos(t *testing.T) {
	s, _, logs := startSim(t, Config{Rate: 1000})
	s.Generate(10 * time.Second)
	ls := loginLines(t, logs)
	checkPeople(t, ls, len(ls))
}

func TestAttackSwitchesRejectBadValues(t *testing.T) {
	_, srv, _ := startSim(t, Config{})
	for _, bad := range []struct{ body, want string }{
		{`{"spraying":{"rate":5,"accounts":10}}`, "spraying.source"},
		{`{"spraying":{"source":"203.0.113.1","rate":5}}`, "spraying.accounts: must be between 1"},
		{`{"spraying":{"source":"x","accounts":3,"rate":1}}`, "spraying.source"},
		{`{"stuffing":{"sources":0,"accounts":10,"rate":5}}`, "stuffing.sources: must be between 1 and 65536"},
		{`{"stuffing":{"sources":10,"accounts":10,"rate":-1}}`, "stuffing.rate: must be between 0"},
		{`{"takeover":{"source":"203.0.113.1","failures":3,"rate":1}}`, "takeover.user: required"},
		{`{"takeover":{"source":"203.0.113.1","user":"u","failures":0,"rate":1}}`, "takeover.failures"},
		{`{"lockouts":{"rate":1e9}}`, "lockouts.rate"},
		{`{"nat":{"source":"192.0.2.1","users":0,"rate":1}}`, "nat.users"},
		{`{"brute_force":{"sources":["203.0.113.1"],"rate":1,"accounts":-1}}`, "brute_force.accounts"},
	} {
		code, body := do(t, "POST", srv.URL+"/admin/fault", bad.body)
		if code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("POST %s: %d %s, want 400 with %q", bad.body, code, body, bad.want)
		}
	}
}
