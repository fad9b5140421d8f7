package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/testenv"
)

// Step is one part of the scripted scenario. Run narrates on the timeline
// and returns an error when what should happen did not: the demo prints
// it, the end-to-end test fails on it.
type Step struct {
	Name string
	Run  func(ctx context.Context, e *Env) error
}

// Steps is the scenario of `make demo` and the end-to-end test, in order.
func Steps() []Step {
	return []Step{
		{"baseline", stepBaseline},
		{"error-rate-restart", stepErrorRate},
		{"redis-evictions-flush", stepRedisEvictions},
		{"brute-force-blocked", stepBruteForceBlocked},
		{"password-spraying-caught", stepPasswordSprayingCaught},
		{"breaker-escalates", stepBreaker},
		{"database-down-blocks-restart", stepDatabaseDownBlocks},
		{"rollout-in-progress-refused", stepRolloutRefused},
		{"certificate-expiry-pages", stepCertificateExpiry},
	}
}

// Play runs every step, stopping at the first failure.
func (e *Env) Play(ctx context.Context) error {
	for i, s := range Steps() {
		e.tl.Printf("STEP", "── %d/%d %s", i+1, len(Steps()), s.Name)
		if err := s.Run(ctx, e); err != nil {
			e.tl.Printf("STEP", "✗ %s failed: %v", s.Name, err)
			return fmt.Errorf("step %s: %w", s.Name, err)
		}
		e.tl.Printf("STEP", "✓ %s", s.Name)
	}
	return nil
}

// The scenario's alerts.
const (
	alertHighErrorRate = "HighErrorRate"
	alertEvictions     = "RedisEvictions"
	alertBruteForce    = "BruteForceSource"
	alertSpraying      = "PasswordSprayingSource"
	alertBreaker       = "RemediatorCircuitBreakerOpen"
	alertCertExpiring  = "CertificateExpiringSoon"
)

const bruteForceSource = "203.0.113.7"

// pollEvery is how often the steps look at Prometheus, the API server,
// Redis or the decisions while they wait.
const pollEvery = 200 * time.Millisecond

func stepBaseline(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	e.tl.Printf("STEP", "waiting until Prometheus scrapes every target and sees auth traffic")
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		s, err := e.Prometheus.Query(ctx, "up")
		if err != nil {
			return false, nil
		}
		up := 0
		for _, x := range s {
			if x.Value == 1 {
				up++
			}
		}
		return up == 5 && len(s) == 5, nil
	}); err != nil {
		return fmt.Errorf("waiting for every target up: %w", err)
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		s, err := e.Prometheus.Query(ctx, `job:auth_requests:rate5m{job="auth-service"} > 1`)
		return err == nil && len(s) == 1, nil
	}); err != nil {
		return fmt.Errorf("waiting for auth-service traffic in the recording rules: %w", err)
	}
	alerts, err := e.Prometheus.Alerts(ctx)
	if err != nil {
		return err
	}
	for _, a := range alerts {
		switch a.Name() {
		case alertHighErrorRate, alertEvictions, alertBruteForce, alertSpraying, alertBreaker:
			return fmt.Errorf("%s is already %s at baseline", alertKey(a.Labels), a.State)
		}
	}
	e.tl.Printf("STEP", "healthy: 5 targets up, auth-service and policy-service serving about 10 requests/s, no scenario alert active")
	return nil
}

func stepErrorRate(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	const svc = "auth-service"
	before := e.Restarts(svc)
	e.tl.Printf("STEP", "auth-service starts failing: 50%% of requests answer 500")
	if err := e.SetFault(ctx, svc, map[string]any{"error_rate": 0.5}); err != nil {
		return err
	}
	match := map[string]string{"job": svc}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertHighErrorRate, "firing", match); err != nil {
		return err
	}
	amAlert, err := e.Alertmanager.WaitForAlert(ctx, alertHighErrorRate, match)
	if err != nil {
		return err
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return e.Restarts(svc) > before, nil
	}); err != nil {
		return fmt.Errorf("waiting for the remediator to restart auth-service: %w", err)
	}
	d, err := e.Kube.Client.AppsV1().Deployments(Namespace).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return err
	}
	at := d.Spec.Template.Annotations[restartedAtAnnotation]
	if at == "" {
		return errors.New("no restartedAt annotation on Deployment auth-service after the restart")
	}
	e.tl.Printf("CHECK", "Deployment auth-service: restartedAt=%s, restarted-by=%s, generation %d",
		at, d.Spec.Template.Annotations["warden.io/restarted-by"], d.Generation)
	if err := e.waitEvent(ctx, "Deployment", svc); err != nil {
		return err
	}
	if err := e.waitResolved(ctx, alertHighErrorRate, match); err != nil {
		return err
	}
	return e.checkExactlyOnce(ctx, amAlert, "restart", func() int { return e.Restarts(svc) - before })
}

func stepRedisEvictions(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	rdb := e.RedisClient(0)
	defer rdb.Close()
	// A key without TTL: evictions (volatile-lru) never remove it, only a
	// flush does.
	if err := rdb.Set(ctx, "demo:marker", "before-flush", 0).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	e.tl.Printf("STEP", "a burst of cache writes fills Redis (maxmemory 4 MiB): keys start being evicted")
	fillCtx, stopFill := context.WithCancel(ctx)
	var fillWG sync.WaitGroup
	fillWG.Add(1)
	go func() {
		defer fillWG.Done()
		fillRedis(fillCtx, e)
	}()
	defer func() {
		stopFill()
		fillWG.Wait()
	}()
	match := map[string]string{"target": "session-cache"}
	if _, err := e.Prometheus.WaitForAlert(ctx, alertEvictions, "firing", match); err != nil {
		return err
	}
	amAlert, err := e.Alertmanager.WaitForAlert(ctx, alertEvictions, match)
	if err != nil {
		return err
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		n, err := rdb.Exists(ctx, "demo:marker").Result()
		return err == nil && n == 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for the remediator to flush the cache (demo:marker gone): %w", err)
	}
	stopFill()
	fillWG.Wait()
	dbsize, _ := rdb.DBSize(ctx).Result()
	e.tl.Printf("CHECK", "Redis db 0 flushed (demo:marker gone, %d keys now); the write burst is over", dbsize)
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return len(e.Decisions(func(d Decision) bool {
			return d.Alertname == alertEvictions && d.Outcome == "acted" && d.Action == "flush-cache"
		})) > 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for the flush-cache audit record: %w", err)
	}
	if err := e.waitResolved(ctx, alertEvictions, match); err != nil {
		return err
	}
	// A second marker proves that no later delivery flushed again.
	if err := rdb.Set(ctx, "demo:marker", "after-flush", 0).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := e.checkExactlyOnce(ctx, amAlert, "flush-cache", func() int {
		return len(e.Decisions(func(d Decision) bool {
			return d.Alertname == alertEvictions && d.Outcome == "acted"
		}))
	}); err != nil {
		return err
	}
	if n, err := rdb.Exists(ctx, "demo:marker").Result(); err != nil || n != 1 {
		return fmt.Errorf("demo:marker written after the flush is gone (exists=%d, err=%v): the cache was flushed twice", n, err)
	}
	return nil
}

// fillRedis writes 16 KiB cache entries with a TTL, 20 a second, until ctx
// ends: about 320 KiB/s, so a 4 MiB Redis evicts about 20 keys a second
// once full.
func fillRedis(ctx context.Context, e *Env) {
	rdb := e.RedisClient(0)
	defer rdb.Close()
	value := strings.Repeat("x", 16<<10)
	everyTick(ctx, 50*time.Millisecond, func(i int) {
		_ = rdb.Set(ctx, fmt.Sprintf("session:%d", i), value, time.Hour).Err()
	})
}

func stepBreaker(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	const svc = "policy-service"
	before := e.Restarts(svc)
	fault := `{"error_rate":0.9}`
	e.tl.Printf("STEP", "policy-service fails (90%% errors) because of something a restart does not fix: it comes back %s after every restart", e.opts.StickyDelay)
	e.setSticky(svc, fault)
	defer e.setSticky(svc, "")
	if err := e.postService(ctx, svc, "/admin/fault", []byte(fault)); err != nil {
		return err
	}
	breaker, err := e.Prometheus.WaitForAlert(ctx, alertBreaker, "firing", map[string]string{"namespace": Namespace})
	if err != nil {
		return fmt.Errorf("%w (policy-service restarts so far: %d)", err, e.Restarts(svc)-before)
	}
	if !strings.Contains(breaker.Labels["target"], svc) {
		return fmt.Errorf("%s fired for target %q, want %s", alertBreaker, breaker.Labels["target"], svc)
	}
	restarts := e.Restarts(svc) - before
	e.tl.Printf("STEP", "automation gave up on policy-service after %d restarts; %s pages a person (Level 2)", restarts, alertBreaker)
	if err := e.waitPaged(ctx, alertBreaker, nil); err != nil {
		return err
	}
	if restarts < 1 {
		return errors.New("the breaker opened without any restart of policy-service")
	}
	acted := e.Decisions(func(d Decision) bool {
		return d.Alertname == alertHighErrorRate && d.Outcome == "acted" && strings.Contains(d.Target, svc)
	})
	if len(acted) != restarts {
		return fmt.Errorf("%d restart decisions for policy-service but %d rollouts", len(acted), restarts)
	}
	// The breaker holds: the fault stays, so Alertmanager delivers the
	// alert again (every repeat interval); wait until such a delivery was
	// declined because of the open breaker, then check nothing restarted.
	// Waiting for the delivery, not for a fixed time, keeps the check
	// meaningful on a slow machine.
	breakerSkips := func() int {
		return len(e.Decisions(func(d Decision) bool { return d.Reason == "breaker_open" }))
	}
	seen := breakerSkips()
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) { return breakerSkips() > seen, nil }); err != nil {
		return fmt.Errorf("waiting for a delivery after the breaker opened to be declined (breaker_open): %w", err)
	}
	if n := e.Restarts(svc) - before; n != restarts {
		return fmt.Errorf("policy-service restarted again after the breaker opened (%d -> %d)", restarts, n)
	}
	if acted := e.Decisions(func(d Decision) bool {
		return d.Alertname == alertHighErrorRate && d.Outcome == "acted" && strings.Contains(d.Target, svc)
	}); len(acted) != restarts {
		return fmt.Errorf("%d restart decisions for policy-service after the breaker opened, want %d", len(acted), restarts)
	}
	skips := map[string]int{}
	for _, d := range e.Decisions(func(d Decision) bool { return strings.Contains(d.Target, svc) && d.Outcome == "skipped" }) {
		skips[d.Reason]++
	}
	e.tl.Printf("CHECK", "policy-service: %d restarts, then no more; skipped deliveries by reason: %v", restarts, skips)
	return nil
}

// waitPaged waits until the pager received the alert, firing, with labels
// that include match.
func (e *Env) waitPaged(ctx context.Context, name string, match map[string]string) error {
	err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
	pages:
		for _, p := range e.Pages() {
			if p.Status != "firing" || p.Labels["alertname"] != name {
				continue
			}
			for k, v := range match {
				if p.Labels[k] != v {
					continue pages
				}
			}
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the on-call engineer to be paged for %s: %w", name, err)
	}
	return nil
}

// waitLeftToPerson waits until the alert fires, pages the on-call
// engineer and is declined by a remediator, and fails if one acted on it:
// the alert is for a person.
func (e *Env) waitLeftToPerson(ctx context.Context, name string, match map[string]string) error {
	if _, err := e.Prometheus.WaitForAlert(ctx, name, "firing", match); err != nil {
		return err
	}
	if err := e.waitPaged(ctx, name, match); err != nil {
		return err
	}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return len(e.Decisions(func(d Decision) bool {
			return d.Alertname == name && d.Outcome == "skipped"
		})) > 0, nil
	}); err != nil {
		return fmt.Errorf("waiting for the remediator to decline %s: %w", name, err)
	}
	if acted := e.Decisions(func(d Decision) bool { return d.Alertname == name && d.Outcome == "acted" }); len(acted) > 0 {
		return fmt.Errorf("the remediator acted on %s: %+v", name, acted[0])
	}
	return nil
}

// waitEvent waits for the remediator's Kubernetes Event on an object.
func (e *Env) waitEvent(ctx context.Context, kind, name string) error {
	return e.waitEventMatching(ctx, kind, name, nil)
}

// waitEventMatching waits for a remediator's Kubernetes Event on an
// object that keep accepts (any, when keep is nil).
func (e *Env) waitEventMatching(ctx context.Context, kind, name string, keep func(corev1.Event) bool) error {
	err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		list, err := e.Kube.Client.CoreV1().Events(Namespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name,
		})
		if err != nil {
			return false, nil
		}
		for _, ev := range list.Items {
			if (ev.Source.Component == "warden-remediator" || ev.ReportingController == "warden.io/remediator") && (keep == nil || keep(ev)) {
				e.tl.Printf("CHECK", "Event on %s/%s: %s %s: %s", kind, name, ev.Type, ev.Reason, ev.Message)
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the remediator's Event on %s/%s: %w", kind, name, err)
	}
	return nil
}

// waitResolved waits until the alert is gone from Prometheus and
// Alertmanager.
func (e *Env) waitResolved(ctx context.Context, name string, match map[string]string) error {
	if err := e.Prometheus.WaitForAlertGone(ctx, name, match); err != nil {
		return err
	}
	return e.Alertmanager.WaitForResolved(ctx, name, match)
}

// checkExactlyOnce replays Alertmanager's delivery of the occurrence to
// both replicas, as a retry or an HA peer would, and checks that the number
// of actions taken stays one.
func (e *Env) checkExactlyOnce(ctx context.Context, a testenv.AlertmanagerAlert, action string, actions func() int) error {
	if n := actions(); n != 1 {
		return fmt.Errorf("%s for %s: %d actions, want exactly 1", action, a.Name(), n)
	}
	isDup := func(d Decision) bool { return d.Fingerprint == a.Fingerprint && d.Reason == "duplicate" }
	dupsBefore := len(e.Decisions(isDup))
	for _, u := range e.RemediatorURLs {
		if err := e.replay(ctx, u+"/api/v1/alerts", a); err != nil {
			return err
		}
	}
	// Give the replicas time to handle the replays.
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		return len(e.Decisions(isDup)) >= dupsBefore+len(e.RemediatorURLs), nil
	}); err != nil {
		return fmt.Errorf("waiting for the replayed deliveries to be recorded as duplicates: %w", err)
	}
	if n := actions(); n != 1 {
		return fmt.Errorf("%s for %s: %d actions after duplicate deliveries, want exactly 1", action, a.Name(), n)
	}
	// The remediators' own metrics agree: one successful action across
	// both replicas (this is the action's first use in the scenario).
	query := fmt.Sprintf(`sum(warden_remediator_actions_total{action=%q,outcome="success"})`, action)
	if err := e.waitCount(ctx, query, 1); err != nil {
		return err
	}
	dups := len(e.Decisions(isDup))
	e.tl.Printf("CHECK", "%s: 1 %s for %d deliveries of the occurrence (%d recognised as duplicates)", a.Name(), action, dups+1, dups)
	return nil
}

// waitCount waits until the query, a sum of counters, is want in
// Prometheus, and fails as soon as it is more: something happened more
// often than once per occurrence.
func (e *Env) waitCount(ctx context.Context, query string, want float64) error {
	var last float64 = -1
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		s, err := e.Prometheus.Query(ctx, query)
		if err != nil || len(s) != 1 {
			return false, nil
		}
		last = s[0].Value
		if last > want {
			return false, fmt.Errorf("%s = %v: more than %v", query, last, want)
		}
		return last == want, nil
	}); err != nil {
		return fmt.Errorf("waiting for %s == %v in Prometheus: %w (last value %v)", query, want, err, last)
	}
	return nil
}

// replay posts a version-4 webhook for one firing alert, as Alertmanager
// does.
func (e *Env) replay(ctx context.Context, url string, a testenv.AlertmanagerAlert) error {
	payload := map[string]any{
		"version": "4", "status": "firing", "receiver": "warden-remediator",
		"groupKey":          "{}/{alertname=~\".+\"}:" + a.Fingerprint,
		"groupLabels":       a.Labels,
		"commonLabels":      a.Labels,
		"commonAnnotations": a.Annotations,
		"externalURL":       e.Alertmanager.URL,
		"truncatedAlerts":   0,
		"alerts": []map[string]any{{
			"status": "firing", "labels": a.Labels, "annotations": a.Annotations,
			"startsAt": a.StartsAt, "endsAt": time.Time{}, "generatorURL": "", "fingerprint": a.Fingerprint,
		}},
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("replay to %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("replay to %s: %s", url, resp.Status)
	}
	return nil
}

func stepCertificateExpiry(ctx context.Context, e *Env) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// Every kind of certificate source is read, and none of the healthy
	// certificates is near its end: whatever fires next is the Secret's.
	kinds := map[string]int{}
	if err := testenv.Poll(ctx, pollEvery, func() (bool, error) {
		s, err := e.Prometheus.Query(ctx, `count by (source_kind) (x509_cert_not_after)`)
		if err != nil {
			return false, nil
		}
		for _, x := range s {
			kinds[x.Metric["source_kind"]] = int(x.Value)
		}
		return len(kinds) == 3, nil
	}); err != nil {
		return fmt.Errorf("waiting for certificates from endpoints, files and Secrets (have %v): %w", kinds, err)
	}
	alerts, err := e.Prometheus.Alerts(ctx)
	if err != nil {
		return err
	}
	for _, a := range alerts {
		if strings.HasPrefix(a.Name(), "Certificate") {
			return fmt.Errorf("%s is already %s before any certificate nears its end", alertKey(a.Labels), a.State)
		}
	}
	e.tl.Printf("CHECK", "certificates read: %d from TLS endpoints, %d from PEM files, %d from Kubernetes Secrets; all valid for months",
		kinds["endpoint"], kinds["file"], kinds["kubernetes"])

	restarts := map[string]int{}
	for _, s := range Services {
		restarts[s] = e.Restarts(s)
	}
	e.tl.Printf("STEP", "auth-service's certificate renewal has been failing for weeks: Secret %s/%s now holds a certificate that expires in %d days",
		Namespace, tlsSecret, int(expiringValidity.Hours()/24))
	cert, err := e.replaceTLSSecret(ctx, expiringValidity)
	if err != nil {
		return err
	}
	match := map[string]string{"source_kind": "kubernetes", "serial_number": cert.Cert.SerialNumber.String()}
	if err := e.waitLeftToPerson(ctx, alertCertExpiring, match); err != nil {
		return err
	}
	for _, s := range Services {
		if n := e.Restarts(s); n != restarts[s] {
			return fmt.Errorf("%s was restarted during the certificate step (%d -> %d)", s, restarts[s], n)
		}
	}
	e.tl.Printf("STEP", "no automatic action: renewing a certificate is for a person (runbook CertificateExpiringSoon); the alert stays until it is renewed")
	return nil
}
