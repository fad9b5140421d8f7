package remediator

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// benchSeries alert series over benchDays, evaluated every benchStep.
const (
	benchSeries = 50
	benchDays   = 7
	benchStep   = 30 * time.Second
)

// benchHistory has benchSeries HighErrorRate series, each firing for 5 to
// 25 minutes at intervals of 1 to 6 hours (staggered per series), and a
// DatabaseDown that fires for half an hour every day.
func benchHistory(start time.Time) []alertSpan {
	end := start.Add(benchDays * 24 * time.Hour)
	var spans []alertSpan
	for i := range benchSeries {
		every := time.Hour + time.Duration(i%6)*time.Hour + time.Duration(i)*time.Minute
		for t, k := start.Add(time.Duration(i)*7*time.Minute), 0; t.Before(end); t, k = t.Add(every), k+1 {
			long := 5*time.Minute + time.Duration((i+k)%5)*5*time.Minute
			spans = append(spans, alertSpan{errorRate(fmt.Sprintf("api-%d", i)), t, minTime(t.Add(long), end)})
		}
	}
	for t := start.Add(12 * time.Hour); t.Before(end); t = t.Add(24 * time.Hour) {
		spans = append(spans, alertSpan{`alertname="DatabaseDown",namespace="prod"`, t, t.Add(30 * time.Minute)})
	}
	return spans
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func benchPolicy() string {
	deployments := make([]string, benchSeries)
	for i := range deployments {
		deployments[i] = fmt.Sprintf("api-%d", i)
	}
	return strings.Replace(simPolicy, "deployments: [auth-service, policy-service, api-1, api-2, api-3, api-4]",
		"deployments: ["+strings.Join(deployments, ", ")+"]", 1)
}

// BenchmarkSimulateSevenDaysOfFiftySeries measures `simulate` over a week
// of ALERTS for 50 alert series in a real Prometheus (evaluation every
// 30s): the range queries, the replay and the report, then each part.
func BenchmarkSimulateSevenDaysOfFiftySeries(b *testing.B) {
	start := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	end := start.Add(benchDays * 24 * time.Hour)
	prom := testenv.StartPrometheusOnData(b, testenv.Backfill(b, alertsOpenMetrics(benchStep, benchHistory(start)...)))
	policy := mustPolicy(b, benchPolicy())
	ctx := context.Background()
	model := DeliveryModel{GroupWait: 30 * time.Second, RepeatInterval: 4 * time.Hour}
	simulate := func(b *testing.B, periods []FiringPeriod) *SimReport {
		rep, err := Simulate(ctx, policy, SimulationInput{Periods: periods, Notifications: NotificationsFromPeriods(periods, start, end, model)},
			SimulateOptions{From: start, To: end, Source: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		return rep
	}
	query := func(b *testing.B) []FiringPeriod {
		periods, err := QueryAlertHistory(ctx, nil, prom.URL, start, end, benchStep)
		if err != nil {
			b.Fatal(err)
		}
		return periods
	}
	periods := query(b)
	rep := simulate(b, periods)
	b.Logf("%d firing periods, %d deliveries, %d actions, %d breaker openings", len(periods), rep.Deliveries, len(rep.Actions), len(rep.BreakerOpenings))

	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := simulate(b, query(b)).Write(io.Discard, SimOutputText); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("range-queries", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			query(b)
		}
	})
	b.Run("replay", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			simulate(b, periods)
		}
	})
}
