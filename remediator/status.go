package remediator

import (
	"bytes"
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/ptr"
)

// recentDecisions bounds the ring of this replica's decisions shown on the
// status page.
const recentDecisions = 200

// statusRefreshSeconds is how often the page reloads itself.
const statusRefreshSeconds = 10

// decisionRing keeps this replica's last decisions in memory. The zero
// value is ready to use.
type decisionRing struct {
	mu   sync.Mutex
	recs []ringEntry
	next int
}

type ringEntry struct {
	At time.Time
	record
}

func (d *decisionRing) add(at time.Time, rec record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.recs) < recentDecisions {
		d.recs = append(d.recs, ringEntry{At: at, record: rec})
		return
	}
	d.recs[d.next] = ringEntry{At: at, record: rec}
	d.next = (d.next + 1) % recentDecisions
}

// newestFirst returns a copy of the ring, newest decision first.
func (d *decisionRing) newestFirst() []ringEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]ringEntry, 0, len(d.recs))
	for i := range d.recs {
		// d.next is the oldest entry once the ring is full.
		out = append(out, d.recs[(d.next+i)%len(d.recs)])
	}
	slices.Reverse(out)
	return out
}

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
}).Parse(statusHTML))

// statusPage is what status.html renders.
type statusPage struct {
	Identity       string
	Now            time.Time
	RefreshSeconds int
	DryRun         bool
	DryRunWhy      string
	Mode           string
	Defaults       Defaults
	RateLimit      RateLimitConfig
	Breaker        BreakerConfig
	Rules          []statusRule
	SharedLimit    bool
	Gates          GatesConfig
	Verify         VerifyConfig
	Freezes        []statusFreeze
	Recent         []ringEntry
	Targets        []statusTarget
	Occurrences    []statusOccurrence
	Breakers       []statusTarget
	Cooldowns      []statusTarget
	// StoreErrors name the stores that could not be read; the rest of
	// the page is still shown.
	StoreErrors []string
}

// statusFreeze is one of the policy's freezes. Runtime freezes (the
// warden.io/freeze-until annotation) are read per decision and show up as
// frozen refusals among the decisions.
type statusFreeze struct {
	Reason, When string
	Active       bool
}

type statusRule struct {
	Name, Action, Target, Allow string
	Matchers                    []string
	BlockWhen                   []string
	DryRun                      bool
	Cooldown                    time.Duration
}

// statusTarget is one target's record in the coordination store, written
// by whichever replica acted last.
type statusTarget struct {
	Store         string // "lease rust-security/warden-deployment-x" or "redis <name>"
	Namespace     string
	Target        string
	Holder        string
	LastActionAt  time.Time
	LastOutcome   string
	Failures      int
	Refires       int
	BreakerUntil  time.Time
	CooldownUntil time.Time
}

// statusOccurrence is one remembered action on a target, by any replica.
type statusOccurrence struct {
	At          time.Time
	Target      string
	Namespace   string
	Fingerprint string
	Outcome     string
	// RecoveredAfter is set for an effective action: when its alert
	// stopped firing.
	RecoveredAfter time.Duration
	Resolved       bool
}

// StatusHandler serves the read-only status page at /: what this replica
// decided recently, what the coordination store says about every target
// (so each replica shows the same), and the policy in force. It asks for
// the webhook's credentials.
func (r *Remediator) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		auth := r.auth.Load()
		if !auth.check(req) {
			w.Header().Set("WWW-Authenticate", auth.challenge())
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		var buf bytes.Buffer
		if err := statusTemplate.Execute(&buf, r.status(ctx)); err != nil {
			r.logger.Error("cannot render status page", "err", err)
			http.Error(w, "cannot render status page", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// The page has no scripts and loads nothing: a label that slipped
		// through escaping still could not run.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		_, _ = w.Write(buf.Bytes())
	})
}

// status collects the page's data. It holds the policy snapshot until it
// is done, so that a reload does not close the snapshot's Redis clients
// under it.
func (r *Remediator) status(ctx context.Context) statusPage {
	snap := r.acquireSnapshot()
	defer snap.users.Done()
	p := snap.policy
	now := r.now()
	page := statusPage{
		Identity:       r.identity,
		Now:            now,
		RefreshSeconds: statusRefreshSeconds,
		DryRun:         r.dryRun || p.DryRun,
		Mode:           p.Mode,
		Defaults:       p.Defaults,
		RateLimit:      p.RateLimit,
		Breaker:        p.Breaker,
		SharedLimit:    r.shared != nil,
		Gates:          p.Gates,
		Verify:         p.Verify,
		Recent:         r.recent.newestFirst(),
	}
	for i := range p.Freezes {
		f := &p.Freezes[i]
		page.Freezes = append(page.Freezes, statusFreeze{Reason: f.Reason, When: f.describe(), Active: f.active(now)})
	}
	switch {
	case r.dryRun:
		page.DryRunWhy = "--dry-run"
	case p.DryRun:
		page.DryRunWhy = "policy dry_run"
	}
	for i := range p.Rules {
		rule := &p.Rules[i]
		sr := statusRule{
			Name: rule.Name, Action: string(rule.Action), Matchers: rule.Matchers,
			DryRun: rule.DryRun, Cooldown: ruleCooldown(p, rule),
		}
		for _, set := range rule.BlockWhen {
			sr.BlockWhen = append(sr.BlockWhen, "{"+strings.Join(set, ", ")+"}")
		}
		if rule.Target.Redis != "" {
			sr.Target = "redis " + rule.Target.Redis
			sr.Allow = strings.Join(rule.Allow.RedisTargets, ", ")
		} else {
			sr.Target = rule.Target.Namespace + "/" + rule.Target.Deployment
			sr.Allow = strings.Join(rule.Allow.Namespaces, ", ") + " / " + strings.Join(rule.Allow.Deployments, ", ")
		}
		page.Rules = append(page.Rules, sr)
	}

	add := func(store, namespace, holder string, t target, st targetState) {
		cooldown := targetCooldown(p, t)
		var cooldownUntil time.Time
		if !st.LastActionAt.IsZero() && st.LastActionAt.Add(cooldown).After(now) {
			cooldownUntil = st.LastActionAt.Add(cooldown)
		}
		var breakerUntil time.Time
		if now.Before(st.BreakerOpenUntil) {
			breakerUntil = st.BreakerOpenUntil
		}
		name := t.String()
		page.Targets = append(page.Targets, statusTarget{
			Store: store, Namespace: namespace, Target: name, Holder: holder,
			LastActionAt: st.LastActionAt, LastOutcome: st.LastOutcome,
			Failures: st.Failures, Refires: st.Refires,
			BreakerUntil: breakerUntil, CooldownUntil: cooldownUntil,
		})
		for _, o := range st.Occurrences {
			page.Occurrences = append(page.Occurrences, statusOccurrence{
				At: o.At, Target: name, Namespace: namespace,
				Fingerprint: o.Fingerprint, Outcome: o.Outcome, Resolved: o.Resolved,
				RecoveredAfter: time.Duration(o.RecoveredAfter) * time.Second,
			})
		}
	}
	for _, ns := range slices.Sorted(slices.Values(p.namespaces())) {
		states, err := r.leases.states(ctx, ns)
		if err != nil {
			page.StoreErrors = append(page.StoreErrors, err.Error())
			continue
		}
		for _, ls := range states {
			name := "lease " + ns + "/" + ls.lease.Name
			if ls.err != nil {
				page.StoreErrors = append(page.StoreErrors, name+": "+ls.err.Error())
				continue
			}
			add(name, ns, ptr.Deref(ls.lease.Spec.HolderIdentity, ""), ls.target, ls.state)
		}
	}
	names := make([]string, 0, len(snap.redis))
	for name := range snap.redis {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := target{Kind: "redis", Name: name}
		st, err := snap.redis[name].read(ctx, t)
		if err != nil {
			page.StoreErrors = append(page.StoreErrors, err.Error())
			continue
		}
		if st.LastActionAt.IsZero() && len(st.Occurrences) == 0 {
			continue // never acted on
		}
		add("redis "+name, "", "", t, st)
	}

	for _, t := range page.Targets {
		if !t.BreakerUntil.IsZero() {
			page.Breakers = append(page.Breakers, t)
		}
		if !t.CooldownUntil.IsZero() {
			page.Cooldowns = append(page.Cooldowns, t)
		}
	}
	sort.SliceStable(page.Occurrences, func(i, j int) bool { return page.Occurrences[i].At.After(page.Occurrences[j].At) })
	return page
}

func ruleCooldown(p *Policy, r *Rule) time.Duration {
	if r.Cooldown > 0 {
		return r.Cooldown
	}
	return p.Defaults.Cooldown
}

// targetCooldown is the longest cooldown of the rules that may act on t:
// the store records when the target was last acted on, not by which rule.
func targetCooldown(p *Policy, t target) time.Duration {
	var longest time.Duration
	for i := range p.Rules {
		r := &p.Rules[i]
		allowed := slices.Contains(r.Allow.Deployments, t.Name) && slices.Contains(r.Allow.Namespaces, t.Namespace)
		if t.Kind == "redis" {
			allowed = slices.Contains(r.Allow.RedisTargets, t.Name)
		}
		if allowed {
			longest = max(longest, ruleCooldown(p, r))
		}
	}
	if longest == 0 {
		return p.Defaults.Cooldown
	}
	return longest
}
