package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// Timeline prints what happens, one line per event, with the time since
// the demo started, so a person can follow the loop.
type Timeline struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// NewTimeline writes to w.
func NewTimeline(w io.Writer) *Timeline { return &Timeline{w: w, start: time.Now()} }

// Printf writes one line tagged with who speaks (STEP, ALERT, REMEDIATOR,
// KUBELET, PAGE, ...).
func (t *Timeline) Printf(who, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := time.Since(t.start).Round(100 * time.Millisecond)
	fmt.Fprintf(t.w, "[%6.1fs] %-10s %s\n", d.Seconds(), who, fmt.Sprintf(format, args...))
}

// Decision is one audit record of the remediator, read from its JSON log.
type Decision struct {
	Replica     string
	Time        time.Time
	Alertname   string
	Fingerprint string
	StartsAt    time.Time
	Rule        string
	Action      string
	Namespace   string
	Target      string
	Outcome     string // acted, skipped, failed, dry_run, resolved
	Reason      string
	Detail      string
}

// Verification is the checked outcome of an action (effective,
// ineffective, inconclusive), read from the remediator's JSON log.
type Verification struct {
	Replica     string
	Time        time.Time
	Alertname   string
	Fingerprint string
	StartsAt    time.Time
	Action      string
	Target      string
	Outcome     string
	Detail      string
	// Recovery is, for an effective action, when the alert stopped firing
	// after it.
	Recovery time.Duration
}

// Of reports whether v is the verification of the action d.
func (v Verification) Of(d Decision) bool {
	return v.Replica == d.Replica && v.Fingerprint == d.Fingerprint && v.StartsAt.Equal(d.StartsAt) && v.Action == d.Action && v.Target == d.Target
}

// decisionLog collects the remediator replicas' decisions and the
// verification outcomes of their actions.
type decisionLog struct {
	mu            sync.Mutex
	decisions     []Decision
	verifications []Verification
	seen          map[string]bool
}

// add records d and reports whether an equal decision (same occurrence,
// outcome and reason, from any replica) was not seen before: repeats are
// recorded but not printed.
func (l *decisionLog) add(d Decision) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.decisions = append(l.decisions, d)
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	key := strings.Join([]string{d.Alertname, d.Fingerprint, d.StartsAt.String(), d.Action, d.Outcome, d.Reason}, "|")
	if l.seen[key] {
		return false
	}
	l.seen[key] = true
	return true
}

func (l *decisionLog) addVerification(v Verification) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.verifications = append(l.verifications, v)
}

func (l *decisionLog) listVerifications() []Verification {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Verification(nil), l.verifications...)
}

// Decisions returns the decisions recorded so far that match keep.
func (l *decisionLog) list(keep func(Decision) bool) []Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Decision
	for _, d := range l.decisions {
		if keep == nil || keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// followDecisions tails a remediator's JSON log file, turning every
// "remediation decision" line into a Decision and every "remediation
// verified" line into a Verification, each with a timeline line.
func followDecisions(ctx context.Context, replica, path string, log *decisionLog, tl *Timeline) {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			partial += line
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		line, partial = partial+line, ""
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		str := func(k string) string { s, _ := rec[k].(string); return s }
		if rec["msg"] == "remediation verified" {
			v := Verification{
				Replica: replica, Alertname: str("alertname"), Fingerprint: str("fingerprint"),
				Action: str("action"), Target: str("target"), Outcome: str("outcome"), Detail: str("detail"),
			}
			v.Time, _ = time.Parse(time.RFC3339Nano, str("time"))
			v.StartsAt, _ = time.Parse(time.RFC3339Nano, str("starts_at"))
			if secs, ok := rec["time_to_recovery_seconds"].(float64); ok {
				v.Recovery = time.Duration(secs * float64(time.Second))
			}
			log.addVerification(v)
			tl.Printf("REMEDIATOR", "%s", describeVerification(v))
			continue
		}
		if rec["msg"] != "remediation decision" {
			continue
		}
		d := Decision{
			Replica: replica, Alertname: str("alertname"), Fingerprint: str("fingerprint"),
			Rule: str("rule"), Action: str("action"), Namespace: str("namespace"), Target: str("target"),
			Outcome: str("outcome"), Reason: str("reason"), Detail: str("detail"),
		}
		d.Time, _ = time.Parse(time.RFC3339Nano, str("time"))
		d.StartsAt, _ = time.Parse(time.RFC3339Nano, str("starts_at"))
		if log.add(d) {
			tl.Printf("REMEDIATOR", "%s", describeDecision(d))
		}
	}
}

func describeDecision(d Decision) string {
	target := d.Target
	on := ""
	if target != "" {
		on = " on " + target
	}
	switch d.Outcome {
	case "acted":
		return fmt.Sprintf("[%s] %s: %s %s — %s", d.Replica, d.Alertname, d.Action, target, d.Detail)
	case "skipped":
		why := d.Reason
		switch d.Reason {
		case "no_matching_rule":
			why = "no rule for this alert: left to a person (Level 2)"
		case "duplicate":
			why = "duplicate delivery of an occurrence already handled"
		}
		return fmt.Sprintf("[%s] %s: not acting%s (%s) %s", d.Replica, d.Alertname, on, why, d.Detail)
	case "resolved":
		return fmt.Sprintf("[%s] %s%s resolved", d.Replica, d.Alertname, on)
	default:
		return fmt.Sprintf("[%s] %s: %s %s%s (%s) %s", d.Replica, d.Alertname, d.Outcome, d.Action, on, d.Reason, d.Detail)
	}
}

// describeVerification says how an action turned out, e.g. "effective
// after 7s".
func describeVerification(v Verification) string {
	return fmt.Sprintf("[%s] %s: %s %s %s — %s", v.Replica, v.Alertname, v.Action, v.Target, v.OutcomeText(), v.Detail)
}

// OutcomeText is the outcome as the timeline shows it: "effective after
// 7s", "ineffective", "inconclusive".
func (v Verification) OutcomeText() string {
	if v.Outcome == "effective" {
		return "effective after " + v.Recovery.Round(time.Second).String()
	}
	return v.Outcome
}

// watchAlerts polls Prometheus and prints every alert that starts firing
// or stops.
func watchAlerts(ctx context.Context, prom *testenv.Prometheus, tl *Timeline) {
	firing := map[string]bool{}
	everyTick(ctx, 250*time.Millisecond, func(int) {
		alerts, err := prom.Alerts(ctx)
		if err != nil {
			return
		}
		now := map[string]bool{}
		for _, a := range alerts {
			if a.State != "firing" {
				continue
			}
			key := alertKey(a.Labels)
			now[key] = true
			if !firing[key] {
				tl.Printf("ALERT", "FIRING   %s — %s", key, a.Annotations["summary"])
			}
		}
		var gone []string
		for key := range firing {
			if !now[key] {
				gone = append(gone, key)
			}
		}
		sort.Strings(gone)
		for _, key := range gone {
			tl.Printf("ALERT", "resolved %s", key)
		}
		firing = now
	})
}

// alertKey names an alert by its name and the labels that tell instances
// apart in this demo.
func alertKey(labels map[string]string) string {
	var parts []string
	for _, k := range []string{"job", "deployment", "target", "source", "action"} {
		if v := labels[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return labels["alertname"] + "{" + strings.Join(parts, ",") + "}"
}
