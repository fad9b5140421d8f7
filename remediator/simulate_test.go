package remediator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	amtemplate "github.com/prometheus/alertmanager/template"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/testenv"
)

// simPolicy is the policy of the simulation tests: a restart rule with a
// 30m cooldown, three actions an hour, a breaker that opens after two
// failed or ineffective actions, a freeze from 07:00 to 08:00 on the
// history's day, and a block while DatabaseDown fires.
const simPolicy = `
defaults: {cooldown: 30m}
rate_limit: {actions_per_hour: 3}
breaker: {failures: 2, refires: 3, window: 2h, open_for: 1h}
verify: {window: 10m}
freezes:
  - reason: release freeze
    from: 2026-11-02T07:00:00Z
    to: 2026-11-02T08:00:00Z
rules:
  - name: restart-on-errors
    matchers: ['alertname="HighErrorRate"']
    action: restart
    target:
      namespace: '{{ .Labels.namespace }}'
      deployment: '{{ .Labels.deployment }}'
    allow:
      namespaces: [prod]
      deployments: [auth-service, policy-service, api-1, api-2, api-3, api-4]
    block_when:
      - ['alertname="DatabaseDown"']
`

// simDay is the day of the synthetic history.
var simDay = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

func at(hms string) time.Time {
	d, err := time.ParseDuration(hms)
	if err != nil {
		panic(err)
	}
	return simDay.Add(d)
}

// alertSpan is an alert firing from from until to (exclusive), with its
// labels in PromQL form (without alertstate).
type alertSpan struct {
	labels   string
	from, to time.Time
}

// alertsOpenMetrics is the ALERTS series of the spans, one firing sample
// every step, as a rule evaluated every step would have written them.
func alertsOpenMetrics(step time.Duration, spans ...alertSpan) []byte {
	sorted := append([]alertSpan(nil), spans...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].labels != sorted[j].labels {
			return sorted[i].labels < sorted[j].labels
		}
		return sorted[i].from.Before(sorted[j].from)
	})
	var b bytes.Buffer
	b.WriteString("# TYPE ALERTS gauge\n")
	for _, s := range sorted {
		for t := s.from; t.Before(s.to); t = t.Add(step) {
			fmt.Fprintf(&b, "ALERTS{alertstate=\"firing\",%s} 1 %d\n", s.labels, t.Unix())
		}
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

func errorRate(deployment string) string {
	return fmt.Sprintf(`alertname="HighErrorRate",namespace="prod",deployment="%s"`, deployment)
}

// simHistory exercises every outcome: an effective restart and a cooldown
// (auth-service), two ineffective restarts that open the breaker and a
// refusal by it (policy-service), the rate limit (api-1 to api-4), the
// freeze (api-1), block_when (api-2 while DatabaseDown fires) and an
// alert no rule matches.
var simHistory = []alertSpan{
	{errorRate("auth-service"), at("10m"), at("14m")},
	{errorRate("auth-service"), at("20m"), at("22m")},
	{errorRate("policy-service"), at("1h"), at("1h20m")},
	{errorRate("policy-service"), at("1h40m"), at("2h")},
	{errorRate("policy-service"), at("2h20m"), at("2h40m")},
	{errorRate("api-1"), at("5h"), at("5h5m")},
	{errorRate("api-2"), at("5h1m"), at("5h6m")},
	{errorRate("api-3"), at("5h2m"), at("5h7m")},
	{errorRate("api-4"), at("5h3m"), at("5h8m")},
	{errorRate("api-1"), at("7h10m"), at("7h15m")},
	{`alertname="DatabaseDown",namespace="prod"`, at("9h"), at("9h30m")},
	{errorRate("api-2"), at("9h5m"), at("9h10m")},
	{`alertname="BruteForceSource",source="203.0.113.7"`, at("10h"), at("10h5m")},
}

const simStep = 15 * time.Second

var simDelivery = DeliveryModel{GroupWait: 30 * time.Second, RepeatInterval: time.Hour}

// simulateFromPrometheus runs the whole pipeline: range queries, the
// deliveries Alertmanager would have made, the replay, the report.
func simulateFromPrometheus(t *testing.T, promURL string, from, to time.Time) *SimReport {
	t.Helper()
	ctx := context.Background()
	periods, err := QueryAlertHistory(ctx, nil, promURL, from, to, simStep)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Simulate(ctx, mustPolicy(t, simPolicy), SimulationInput{
		Periods:       periods,
		Notifications: NotificationsFromPeriods(periods, from, to, simDelivery),
	}, SimulateOptions{From: from, To: to, Source: "prometheus"})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

type simActionKey struct {
	time   string
	target string
	verify string
}

func actionKeys(rep *SimReport) []simActionKey {
	var out []simActionKey
	for _, a := range rep.Actions {
		out = append(out, simActionKey{a.Time.Format("15:04:05"), targetLabel(a.Namespace, a.Target), a.verificationText()})
	}
	return out
}

func refusalsOf(rep *SimReport, target string) map[string]int {
	out := map[string]int{}
	for _, rt := range rep.ByTarget {
		if targetLabel(rt.Namespace, rt.Target) == target {
			for _, c := range rt.Refusals {
				out[c.Reason] += c.Count
			}
		}
	}
	return out
}

func TestSimulateReplaysALERTSHistoryFromARealPrometheus(t *testing.T) {
	prom := testenv.StartPrometheusOnData(t, testenv.Backfill(t, alertsOpenMetrics(simStep, simHistory...)))
	// The range starts 7s off the evaluations' phase: the times of the
	// actions must still be those of the evaluations plus group_wait.
	from, to := simDay.Add(7*time.Second), simDay.Add(12*time.Hour)
	rep := simulateFromPrometheus(t, prom.URL, from, to)

	t.Run("actions at the expected virtual times", func(t *testing.T) {
		want := []simActionKey{
			{"00:10:30", "prod/deployment/auth-service", "effective after 3m30s"},
			{"01:00:30", "prod/deployment/policy-service", "ineffective"},
			{"01:40:30", "prod/deployment/policy-service", "ineffective"},
			{"05:00:30", "prod/deployment/api-1", "effective after 4m30s"},
			{"05:01:30", "prod/deployment/api-2", "effective after 4m30s"},
			{"05:02:30", "prod/deployment/api-3", "effective after 4m30s"},
		}
		if got := actionKeys(rep); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("actions:\n got %v\nwant %v", got, want)
		}
		if rep.PeakActionsPerHour != 3 || !rep.PeakHourStart.Equal(at("5h30s")) {
			t.Errorf("peak: %d from %s, want 3 from 05:00:30", rep.PeakActionsPerHour, rep.PeakHourStart)
		}
		wantTargets := []string{"prod/deployment/api-1", "prod/deployment/api-2", "prod/deployment/api-3", "prod/deployment/auth-service", "prod/deployment/policy-service"}
		if fmt.Sprint(rep.Targets) != fmt.Sprint(wantTargets) {
			t.Errorf("targets touched: %v, want %v", rep.Targets, wantTargets)
		}
	})
	t.Run("refusals with their reasons", func(t *testing.T) {
		for target, want := range map[string]map[string]int{
			"prod/deployment/auth-service":   {ReasonCooldown: 1},
			"prod/deployment/policy-service": {ReasonBreakerOpen: 1},
			"prod/deployment/api-4":          {ReasonRateLimited: 1},
			"prod/deployment/api-1":          {ReasonFrozen: 1},
			"prod/deployment/api-2":          {ReasonBlockedByAlert: 1},
		} {
			if got := refusalsOf(rep, target); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s refusals: %v, want %v", target, got, want)
			}
		}
		total := map[string]int{}
		for _, c := range rep.Refusals {
			total[c.Reason] = c.Count
		}
		// DatabaseDown and BruteForceSource match no rule.
		if total[ReasonNoMatchingRule] != 2 {
			t.Errorf("no_matching_rule: %d, want 2 (DatabaseDown, BruteForceSource): %v", total[ReasonNoMatchingRule], rep.Refusals)
		}
		// The list says when and why, in time order.
		var got []string
		for _, x := range rep.Refused {
			got = append(got, x.Time.Format("15:04:05")+" "+x.Target+" "+x.Reason+": "+x.Detail)
		}
		want := []string{
			"00:20:30 deployment/auth-service cooldown: last action 10m0s ago (cooldown 30m0s)",
			"02:20:30 deployment/policy-service breaker_open: circuit breaker open until 2026-11-02T02:50:30Z",
			"05:03:30 deployment/api-4 rate_limited: rate_limit.actions_per_hour reached: 3 actions by all replicas within the last hour",
			"07:10:30 deployment/api-1 frozen: policy freeze: release freeze",
			`09:05:30 deployment/api-2 blocked_by_alert: DatabaseDown firing (block_when {alertname="DatabaseDown"}, read from alert history)`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("refused:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("breaker opens when the alert keeps firing after actions", func(t *testing.T) {
		if len(rep.BreakerOpenings) != 1 {
			t.Fatalf("breaker openings: %+v, want one", rep.BreakerOpenings)
		}
		o := rep.BreakerOpenings[0]
		// The second ineffective verification ends verify.window (10m)
		// after the second restart.
		if o.Target != "deployment/policy-service" || !o.Time.Equal(at("1h50m30s")) || !o.Until.Equal(at("2h50m30s")) {
			t.Errorf("breaker opening %+v, want policy-service at 01:50:30 until 02:50:30", o)
		}
	})
	t.Run("a second run gives byte-identical output", func(t *testing.T) {
		again := simulateFromPrometheus(t, prom.URL, from, to)
		for _, format := range []string{SimOutputText, SimOutputMarkdown, SimOutputJSON} {
			var a, b bytes.Buffer
			if err := rep.Write(&a, format); err != nil {
				t.Fatal(err)
			}
			if err := again.Write(&b, format); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Errorf("%s output differs between two runs:\n%s\n----\n%s", format, a.String(), b.String())
			}
		}
	})
	t.Run("formats", func(t *testing.T) {
		checkReportFormats(t, rep)
	})
}

// checkReportFormats parses the json back and checks that text and
// markdown hold every action and section.
func checkReportFormats(t *testing.T, rep *SimReport) {
	t.Helper()
	var j bytes.Buffer
	if err := rep.Write(&j, SimOutputJSON); err != nil {
		t.Fatal(err)
	}
	var back SimReport
	dec := json.NewDecoder(bytes.NewReader(j.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("json output does not decode into SimReport: %v", err)
	}
	if len(back.Actions) != len(rep.Actions) || len(back.ByTarget) != len(rep.ByTarget) || len(back.BreakerOpenings) != len(rep.BreakerOpenings) ||
		back.PeakActionsPerHour != rep.PeakActionsPerHour || fmt.Sprint(back.Refusals) != fmt.Sprint(rep.Refusals) || fmt.Sprint(back.Refused) != fmt.Sprint(rep.Refused) {
		t.Errorf("json round trip lost data:\n got %+v\nwant %+v", back, *rep)
	}
	var raw map[string]any
	if err := json.Unmarshal(j.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"actions", "by_rule_and_target", "refusals", "peak_actions_per_hour", "breaker_openings", "targets_touched", "not_evaluated", "assumptions", "refused"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("json output has no %q", k)
		}
	}
	for format, sections := range map[string][]string{
		SimOutputText:     {"Per rule and target:", "Actions:", "Breaker openings:", "Targets touched:", "Not evaluated:", "Assumptions:", "Refusals:", "Refused (except duplicate and no_matching_rule):"},
		SimOutputMarkdown: {"## Summary", "## Refusals by reason", "## Per rule and target", "## Actions", "## Refused", "## Breaker openings", "## Targets touched", "## Not evaluated", "## Assumptions"},
	} {
		var b bytes.Buffer
		if err := rep.Write(&b, format); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, s := range sections {
			if !strings.Contains(out, s) {
				t.Errorf("%s output has no %q", format, s)
			}
		}
		for _, a := range rep.Actions {
			if !strings.Contains(out, simTime(a.Time)+"  "+a.Rule) && !strings.Contains(out, "| "+simTime(a.Time)+" | "+a.Rule+" |") {
				t.Errorf("%s output has no row for the action at %s", format, simTime(a.Time))
			}
		}
	}
	if err := rep.Write(&bytes.Buffer{}, "yaml"); err == nil {
		t.Error("an unknown output format is accepted")
	}
}

// webhookLine is one saved webhook body with its receipt time.
func webhookLine(t *testing.T, received time.Time, alerts ...amtemplate.Alert) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(payload(alerts...), &m); err != nil {
		t.Fatal(err)
	}
	m["receivedAt"] = received
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func resolvedAlert(a amtemplate.Alert, endsAt time.Time) amtemplate.Alert {
	a.Status, a.EndsAt = "resolved", endsAt
	return a
}

func TestSimulateReplaysSavedWebhookBodies(t *testing.T) {
	labels := map[string]string{"namespace": "prod", "deployment": "auth-service"}
	first := firing("HighErrorRate", "aaa1", at("1h"), labels)
	second := firing("HighErrorRate", "aaa1", at("1h20m"), labels)
	third := firing("HighErrorRate", "aaa1", at("2h"), labels)
	dbDown := firing("DatabaseDown", "ddd1", at("3h"), map[string]string{"namespace": "prod"})
	blocked := firing("HighErrorRate", "bbb1", at("3h5m"), map[string]string{"namespace": "prod", "deployment": "api-1"})
	lines := []string{
		webhookLine(t, at("1h"), first),
		webhookLine(t, at("1h1m"), first), // a repeat: duplicate
		webhookLine(t, at("1h4m"), resolvedAlert(first, at("1h4m"))),
		webhookLine(t, at("1h20m"), second), // within the cooldown
		webhookLine(t, at("1h21m"), resolvedAlert(second, at("1h21m"))),
		webhookLine(t, at("2h"), third), // acts; still firing at the end
		webhookLine(t, at("3h"), dbDown),
		webhookLine(t, at("3h5m"), blocked),
		webhookLine(t, at("3h10m"), resolvedAlert(dbDown, at("3h10m")), resolvedAlert(blocked, at("3h10m"))),
	}
	for name, text := range map[string]string{
		"json lines": strings.Join(lines, "\n") + "\n",
		"json array": "[\n" + strings.Join(lines, ",\n") + "\n]",
	} {
		t.Run(name, func(t *testing.T) {
			ns, err := ReadNotifications(strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) != 10 {
				t.Fatalf("%d alerts read, want 10", len(ns))
			}
			rep, err := Simulate(context.Background(), mustPolicy(t, simPolicy), SimulationInput{
				Periods: PeriodsFromNotifications(ns), Notifications: ns,
			}, SimulateOptions{From: at("0s"), To: at("4h"), Source: "file"})
			if err != nil {
				t.Fatal(err)
			}
			want := []simActionKey{
				{"01:00:00", "prod/deployment/auth-service", "effective after 4m0s"},
				{"02:00:00", "prod/deployment/auth-service", "ineffective"},
			}
			if got := actionKeys(rep); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("actions:\n got %v\nwant %v", got, want)
			}
			if got, want := refusalsOf(rep, "prod/deployment/auth-service"), map[string]int{ReasonDuplicate: 1, ReasonCooldown: 1}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("auth-service refusals %v, want %v", got, want)
			}
			if got, want := refusalsOf(rep, "prod/deployment/api-1"), map[string]int{ReasonBlockedByAlert: 1}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("api-1 refusals %v, want %v", got, want)
			}
			checkReportFormats(t, rep)
		})
	}
}

func TestReadNotificationsRejectsBadInput(t *testing.T) {
	good := webhookLine(t, at("1h"), firing("A", "f1", at("1h"), nil))
	tests := []struct{ name, text, want string }{
		{"empty", "", "no webhook payloads"},
		{"no receive time", string(payload(firing("A", "f1", at("1h"), nil))), "line 1: receivedAt: required"},
		{"bad json on a line", good + "\n{not json\n", "line 2"},
		{"bad payload in an array", "[" + strings.Replace(good, `"version":"4"`, `"version":"3"`, 1) + "]", "element 0: unsupported payload version"},
		{"broken array", "[" + good, "JSON array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadNotifications(strings.NewReader(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSimulateCapsTargetsPerNamespace(t *testing.T) {
	policy := strings.Replace(simPolicy, "rate_limit: {actions_per_hour: 3}", "rate_limit: {actions_per_hour: 0, max_targets_per_namespace: 2}", 1)
	var periods []FiringPeriod
	for i, d := range []string{"api-1", "api-2", "api-3"} {
		periods = append(periods, FiringPeriod{
			Labels: map[string]string{"alertname": "HighErrorRate", "namespace": "prod", "deployment": d},
			Start:  at("1h").Add(time.Duration(i) * time.Minute), End: at("1h30m"),
		})
	}
	// api-1 fires again after its cooldown, within the hour: the same
	// target does not count twice.
	periods = append(periods, FiringPeriod{
		Labels: map[string]string{"alertname": "HighErrorRate", "namespace": "prod", "deployment": "api-1"},
		Start:  at("1h40m"), End: at("1h45m"),
	})
	from, to := at("0s"), at("3h")
	rep, err := Simulate(context.Background(), mustPolicy(t, policy), SimulationInput{
		Periods: periods, Notifications: NotificationsFromPeriods(periods, from, to, DeliveryModel{}),
	}, SimulateOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	want := []simActionKey{
		{"01:00:00", "prod/deployment/api-1", "ineffective"},
		{"01:01:00", "prod/deployment/api-2", "ineffective"},
		{"01:40:00", "prod/deployment/api-1", "effective after 5m0s"},
	}
	if got := actionKeys(rep); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("actions:\n got %v\nwant %v", got, want)
	}
	if got := refusalsOf(rep, "prod/deployment/api-3"); got[ReasonRateLimited] != 1 {
		t.Errorf("api-3 refusals %v, want one rate_limited (max_targets_per_namespace)", got)
	}
}

func TestPeriodsFromPointsToleratesOneMissedEvaluation(t *testing.T) {
	step := 10 * time.Second
	t0 := simDay
	pts := func(samples ...int) []HistoryPoint {
		var out []HistoryPoint
		for i, s := range samples {
			if s < 0 {
				continue // absent at this step
			}
			out = append(out, HistoryPoint{At: t0.Add(time.Duration(i) * step), Sample: t0.Add(time.Duration(s) * step).Add(-3 * time.Second)})
		}
		return out
	}
	tests := []struct {
		name    string
		samples []int
		want    string
	}{
		{"one period", []int{-1, 1, 2, 3, -1, -1}, "[00:00:07-00:00:37]"},
		{"a missed evaluation keeps the period", []int{-1, 1, 1, 3, -1, -1}, "[00:00:07-00:00:37]"},
		{"stale samples end it (backfilled data)", []int{-1, 1, 2, 2, 2, 2}, "[00:00:07-00:00:27]"},
		{"a gap makes two periods", []int{-1, 1, 2, -1, -1, 5, 6, -1}, "[00:00:07-00:00:27 00:00:47-00:01:07]"},
		{"still firing at the end", []int{-1, 1, 2, 3, 4, 5}, "[00:00:07-open]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := t0.Add(time.Duration(len(tt.samples)-1) * step)
			got := PeriodsFromPoints(map[string]*alertPoints{"a": {labels: map[string]string{"alertname": "A"}, points: pts(tt.samples...)}}, to, step)
			var s []string
			for _, p := range got {
				end := "open"
				if !p.End.IsZero() {
					end = p.End.Format("15:04:05")
				}
				s = append(s, p.Start.Format("15:04:05")+"-"+end)
			}
			if fmt.Sprint(s) != tt.want {
				t.Fatalf("periods %v, want %s", s, tt.want)
			}
		})
	}
}

func TestSimulateWithKubeconfigPlacesFreezesAndRolloutsInTime(t *testing.T) {
	k := kubeServer.Get(t)
	kube := kubeClient(t, k.Config)
	ctx := context.Background()
	ns := setupTarget(t, kube, "auth-service", func(d *appsv1.Deployment) {
		d.Annotations = map[string]string{FreezeUntilAnnotation: at("2h").Format(time.RFC3339), FreezeReasonAnnotation: "database migration"}
	})
	// policy-service was rolled out by someone else at 04:00.
	dep, err := kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "policy-service", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "policy-service"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "policy-service"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Spec.Template.Spec.Containers[0].Image = "registry.example/app:2"
	if dep, err = kube.AppsV1().Deployments(ns).Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dep.Status = appsv1.DeploymentStatus{
		ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		Conditions: []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable",
			LastUpdateTime: metav1.NewTime(at("4h")), LastTransitionTime: metav1.NewTime(at("4h")),
		}},
	}
	if _, err := kube.AppsV1().Deployments(ns).UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	policy := strings.NewReplacer("defaults: {cooldown: 30m}", "defaults: {cooldown: 1m}", "namespaces: [prod]", "namespaces: ["+ns+"]").Replace(simPolicy)
	fires := func(deployment, start string) FiringPeriod {
		return FiringPeriod{Labels: map[string]string{"alertname": "HighErrorRate", "namespace": ns, "deployment": deployment}, Start: at(start), End: at(start).Add(2 * time.Minute)}
	}
	periods := []FiringPeriod{
		fires("auth-service", "1h"),      // frozen until 02:00
		fires("auth-service", "3h"),      // acts
		fires("policy-service", "3h50m"), // acts: the rollout has not happened yet
		fires("policy-service", "4h5m"),  // recent_rollout
		fires("policy-service", "4h20m"), // acts
	}
	from, to := at("0s"), at("6h")
	rep, err := Simulate(ctx, mustPolicy(t, policy), SimulationInput{
		Periods: periods, Notifications: NotificationsFromPeriods(periods, from, to, DeliveryModel{}),
	}, SimulateOptions{From: from, To: to, Kube: kube})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range rep.Actions {
		got = append(got, a.Time.Format("15:04")+" "+a.Target)
	}
	for _, x := range rep.Refused {
		got = append(got, x.Time.Format("15:04")+" "+x.Target+" "+x.Reason+": "+x.Detail)
	}
	want := []string{
		"03:00 deployment/auth-service",
		"03:50 deployment/policy-service",
		"04:20 deployment/policy-service",
		"01:00 deployment/auth-service frozen: deployment auth-service frozen until 2026-11-02T02:00:00Z: database migration",
		"04:05 deployment/policy-service recent_rollout: deployment policy-service: rollout progressed 5m0s earlier (gates.recent_rollout 10m0s)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(rep.NotEvaluated) != 2 || !strings.Contains(rep.NotEvaluated[0], "rollout_in_progress (the progress of a past rollout is not recorded)") {
		t.Errorf("not evaluated: %v", rep.NotEvaluated)
	}
}

// A rule that waits for a person's approval is simulated as approved at
// once, and the report says so: live, the action comes when the person
// approves.
func TestSimulateMarksActionsThatWaitForApproval(t *testing.T) {
	const policy = `
rules:
  - name: block-attacking-source
    matchers: ['alertname="BruteForceSource"']
    action: block-source
    approval: required
    target: {namespace: prod, deployment: auth-service}
    allow: {namespaces: [prod], deployments: [auth-service]}
    block_source:
      configmap: auth-gateway-blocklist
      reload: {port: 8080}
  - name: restart-on-errors
    matchers: ['alertname="HighErrorRate"']
    action: restart
    target: {namespace: prod, deployment: api-1}
    allow: {namespaces: [prod], deployments: [api-1]}
`
	attack := firing("BruteForceSource", "bf01", at("1h"), map[string]string{"source": "203.0.113.7"})
	errs := firing("HighErrorRate", "he01", at("2h"), nil)
	ns, err := ReadNotifications(strings.NewReader(strings.Join([]string{
		webhookLine(t, at("1h"), attack),
		webhookLine(t, at("2h"), errs),
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Simulate(context.Background(), mustPolicy(t, policy), SimulationInput{
		Periods: PeriodsFromNotifications(ns), Notifications: ns,
	}, SimulateOptions{From: at("0s"), To: at("3h"), Source: "file"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, a := range rep.Actions {
		got[a.Action] = a.ApprovalRequired
	}
	if want := map[string]bool{"block-source": true, "restart": false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("actions (action: approval required) %v, want %v", got, want)
	}
	var text bytes.Buffer
	if err := rep.Write(&text, SimOutputText); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "block-source (after approval)") || strings.Contains(text.String(), "restart (after approval)") {
		t.Errorf("the text report does not mark exactly the approved action:\n%s", text.String())
	}
}
