// Package e2e runs warden's whole loop with real Prometheus, Alertmanager,
// PostgreSQL, Redis and kube-apiserver, and asserts the scenario of
// `make demo` step by step (internal/demo): each step's alert fires, the
// action is read back from the API server or Redis, the audit record
// exists, the alert resolves, and duplicate deliveries cause no second
// action; alerts that are for a person page and cause no action. After the
// scenario every panel query of every dashboard must return data from the
// demo's Prometheus, the daily report must hold what the same PromQL
// returns, and Chromium must show the remediators' status pages with the
// scenario's restart and the report's HTML with its charts.
package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/demo"
)

// testWriter sends the demo's timeline to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole loop (about five minutes); skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tl := demo.NewTimeline(testWriter{t})
	startCtx, cancelStart := context.WithTimeout(ctx, 10*time.Minute)
	env, err := demo.Start(startCtx, demo.Options{Timeline: tl})
	cancelStart()
	if err != nil {
		t.Fatalf("start the loop: %v", err)
	}
	t.Cleanup(env.Stop)

	// Each step builds on the state the previous one left, so the first
	// failure ends the scenario.
	start := time.Now()
	for _, step := range demo.Steps() {
		if !t.Run(step.Name, func(t *testing.T) {
			if err := step.Run(ctx, env); err != nil {
				t.Fatal(err)
			}
		}) {
			t.Fatalf("step %s failed; later steps depend on it", step.Name)
		}
	}
	// Every action of the scenario shows its verification outcome, and
	// the restart that fixed auth-service is effective.
	t.Run("every-action-verified", func(t *testing.T) {
		lines, err := env.CheckActionsVerified(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(lines, func(l string) bool {
			return strings.Contains(l, "restart deployment/auth-service") && strings.Contains(l, ": effective after ")
		}) {
			t.Errorf("outcomes %q, want the restart of auth-service effective after some seconds", lines)
		}
	})
	// After the scenario, every dashboard panel shows what it played.
	t.Run("dashboards-have-data", func(t *testing.T) {
		checkDashboardsHaveData(ctx, t, env, start)
	})
	// The daily report agrees with Prometheus, and a person's browser
	// shows it and the status pages.
	var daily *demo.DailyReport
	t.Run("daily-report-matches-prometheus", func(t *testing.T) {
		daily = checkDailyReport(ctx, t, env)
	})
	t.Run("status-pages-and-report-in-browser", func(t *testing.T) {
		if daily == nil {
			t.Fatal("no daily report to load (see daily-report-matches-prometheus)")
		}
		checkInBrowser(t, env, daily)
	})
	// The policy simulated over the scenario's ALERTS takes the actions
	// the live remediators took.
	t.Run("simulation-matches-live", func(t *testing.T) {
		checkSimulationMatchesLive(ctx, t, env, start)
	})
}
