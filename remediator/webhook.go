package remediator

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	amtemplate "github.com/prometheus/alertmanager/template"
)

// Auth holds the credentials a webhook request must present: a bearer
// token, basic auth, or either when both are set. With neither set every
// request is refused unless Disabled is true.
type Auth struct {
	BearerToken string
	Username    string
	Password    string
	// Disabled accepts unauthenticated requests (--no-auth).
	Disabled bool
}

// Configured reports whether any credential is set.
func (a *Auth) Configured() bool { return a.BearerToken != "" || a.Username != "" }

// check compares in constant time. Hashing first makes the comparison
// independent of the lengths too.
func (a *Auth) check(r *http.Request) bool {
	if a.Disabled {
		return true
	}
	eq := func(got, want string) bool {
		g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
		return subtle.ConstantTimeCompare(g[:], w[:]) == 1
	}
	if a.BearerToken != "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && equalFoldASCII(h[:7], "Bearer ") {
			if eq(h[7:], a.BearerToken) {
				return true
			}
		}
	}
	if a.Username != "" {
		if u, p, ok := r.BasicAuth(); ok {
			// Evaluate both so timing does not reveal which one differed.
			uok, pok := eq(u, a.Username), eq(p, a.Password)
			if uok && pok {
				return true
			}
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

func (a *Auth) challenge() string {
	switch {
	case a.BearerToken != "" && a.Username != "":
		return `Bearer realm="warden-remediator", Basic realm="warden-remediator"`
	case a.Username != "":
		return `Basic realm="warden-remediator"`
	}
	return `Bearer realm="warden-remediator"`
}

// maxAlertsPerPayload bounds the work one request can queue (the body cap
// bounds it too; this catches many tiny alerts).
const maxAlertsPerPayload = 1000

// DecodeWebhook parses and checks an Alertmanager webhook payload (version
// 4). Fields Alertmanager adds in later versions are ignored, so that an
// upgrade of Alertmanager does not stop remediation; the version field is
// the compatibility contract and must be "4". Every alert must carry a
// status, a fingerprint, a start time and an alertname label.
func DecodeWebhook(body []byte) (*webhook.Message, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var msg webhook.Message
	if err := dec.Decode(&msg); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("malformed JSON: data after the payload object")
	}
	if msg.Version != "4" {
		return nil, fmt.Errorf("unsupported payload version %q (want \"4\")", truncate(msg.Version, 20))
	}
	if msg.Data == nil || msg.Alerts == nil {
		return nil, errors.New("missing alerts")
	}
	if len(msg.Alerts) > maxAlertsPerPayload {
		return nil, fmt.Errorf("too many alerts in one payload: %d (at most %d)", len(msg.Alerts), maxAlertsPerPayload)
	}
	for i := range msg.Alerts {
		if err := checkAlert(&msg.Alerts[i]); err != nil {
			return nil, fmt.Errorf("alerts[%d]: %w", i, err)
		}
	}
	return &msg, nil
}

func checkAlert(a *amtemplate.Alert) error {
	if a.Status != "firing" && a.Status != "resolved" {
		return fmt.Errorf("status must be firing or resolved, got %q", truncate(a.Status, 20))
	}
	if a.Fingerprint == "" || len(a.Fingerprint) > 64 {
		return errors.New("fingerprint must be 1 to 64 characters")
	}
	for _, c := range []byte(a.Fingerprint) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return errors.New("fingerprint must be alphanumeric")
		}
	}
	if a.StartsAt.IsZero() {
		return errors.New("startsAt is required")
	}
	if a.Labels["alertname"] == "" {
		return errors.New("label alertname is required")
	}
	return nil
}

// WebhookHandler serves POST /api/v1/alerts (and /webhook).
func (r *Remediator) WebhookHandler() http.Handler {
	return http.HandlerFunc(r.serveWebhook)
}

func (r *Remediator) serveWebhook(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	// Receipt time on the remediator's clock, against which
	// defaults.max_delay is measured.
	code, msg := r.webhook(w, req, r.now())
	if code >= 400 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg+"\n")
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg)
	}
	r.metrics.webhookRequests.WithLabelValues(strconv.Itoa(code)).Inc()
	r.metrics.webhookDuration.Observe(time.Since(start).Seconds())
	switch {
	case code == http.StatusUnauthorized:
		r.logUnauthorized(req)
	case code >= 400 && code != http.StatusServiceUnavailable:
		r.logger.Warn("webhook request refused", "code", code, "reason", msg, "remote", req.RemoteAddr)
	}
}

func (r *Remediator) webhook(w http.ResponseWriter, req *http.Request, received time.Time) (int, string) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, "method not allowed: use POST"
	}
	auth := r.auth.Load()
	if !auth.check(req) {
		w.Header().Set("WWW-Authenticate", auth.challenge())
		return http.StatusUnauthorized, "unauthorized"
	}
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return http.StatusUnsupportedMediaType, "Content-Type must be application/json"
	}
	if req.ContentLength > r.maxBody {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", r.maxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", r.maxBody)
		}
		return http.StatusBadRequest, "cannot read body: " + err.Error()
	}
	msg, err := DecodeWebhook(body)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}
	if msg.TruncatedAlerts > 0 {
		r.logger.Warn("Alertmanager truncated the alert list (max_alerts in its webhook_config); the missing alerts are not seen",
			"truncated_alerts", msg.TruncatedAlerts, "group_key", msg.GroupKey)
	}
	if n := len(msg.Alerts); n > cap(r.queue) {
		// No amount of waiting makes room: a 503 would be retried forever.
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("%d alerts in one payload, more than the queue holds (--queue.size %d): set max_alerts to at most %d in Alertmanager's webhook_config", n, cap(r.queue), cap(r.queue))
	}
	switch err := r.enqueue(msg.Alerts, received); {
	case errors.Is(err, errShuttingDown):
		w.Header().Set("Retry-After", "5")
		return http.StatusServiceUnavailable, "shutting down"
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "1")
		return http.StatusServiceUnavailable, "queue full"
	case errors.Is(err, errBacklogged):
		w.Header().Set("Retry-After", "5")
		return http.StatusServiceUnavailable, err.Error()
	case err != nil:
		return http.StatusServiceUnavailable, err.Error()
	}
	return http.StatusAccepted, `{"status":"queued","alerts":` + strconv.Itoa(len(msg.Alerts)) + "}\n"
}

// HealthHandler answers /-/healthy: the process is up.
func (r *Remediator) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "Healthy.\n")
	})
}

// ReadyHandler answers /-/ready: 200 while alerts are accepted, 503 while
// shutting down.
func (r *Remediator) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !r.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "Shutting down.\n")
			return
		}
		_, _ = io.WriteString(w, "Ready.\n")
	})
}
