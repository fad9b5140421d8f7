package remediator

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ApprovalTokens are the credentials of the approvals endpoint: a bearer
// token per person, so that the record names who approved. They are not
// the webhook's: Alertmanager's token cannot approve. The zero value has
// no approver: the endpoint is off.
type ApprovalTokens struct {
	names  []string
	hashes [][sha256.Size]byte
}

// ErrNoApprovalTokens is returned by ParseApprovalTokens for a text with
// no name:token line (empty, or comments only).
var ErrNoApprovalTokens = errors.New("no name:token line")

// Len is the number of approvers.
func (t *ApprovalTokens) Len() int { return len(t.names) }

// ParseApprovalTokens reads "name:token" lines; blank lines and lines
// starting with # are skipped. Names and tokens must be unique and
// tokens at least 16 characters long. Errors name the line and the
// person, never a token.
func ParseApprovalTokens(text string) (ApprovalTokens, error) {
	var t ApprovalTokens
	seen := map[[sha256.Size]byte]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, token, ok := strings.Cut(line, ":")
		name, token = strings.TrimSpace(name), strings.TrimSpace(token)
		switch {
		case !ok || name == "" || token == "":
			return ApprovalTokens{}, fmt.Errorf("line %d: want name:token", i+1)
		case len(token) < 16:
			return ApprovalTokens{}, fmt.Errorf("line %d: the token of %s is shorter than 16 characters", i+1, name)
		}
		for _, n := range t.names {
			if n == name {
				return ApprovalTokens{}, fmt.Errorf("line %d: %s appears twice", i+1, name)
			}
		}
		h := sha256.Sum256([]byte(token))
		if seen[h] {
			return ApprovalTokens{}, fmt.Errorf("line %d: the token of %s is already someone else's", i+1, name)
		}
		seen[h] = true
		t.names = append(t.names, name)
		t.hashes = append(t.hashes, h)
	}
	if len(t.names) == 0 {
		return ApprovalTokens{}, ErrNoApprovalTokens
	}
	return t, nil
}

// who returns the name whose token the request carries. Every token is
// compared, in constant time, whichever matches.
func (t *ApprovalTokens) who(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) <= 7 || !equalFoldASCII(h[:7], "Bearer ") {
		return "", false
	}
	got := sha256.Sum256([]byte(h[7:]))
	found := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(got[:], t.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return t.names[found], true
}

// SetApprovalTokens replaces the approvals endpoint's credentials (after a
// reload or a change of the file); the zero value turns the endpoint off.
func (r *Remediator) SetApprovalTokens(t ApprovalTokens) { r.approvalTokens.Store(&t) }

// ApprovalsHandler serves GET /api/v1/approvals (the open approvals) and
// POST /api/v1/approvals/ID with {"decision": "approve"} or "deny". Only
// the tokens set with SetApprovalTokens are accepted; without any, the
// endpoint is off and answers 404. The approver recorded is the token's
// name.
func (r *Remediator) ApprovalsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tokens := r.approvalTokens.Load()
		if tokens == nil || tokens.Len() == 0 {
			http.Error(w, "approvals endpoint not configured (--web.approvals-tokens-file)", http.StatusNotFound)
			return
		}
		name, ok := tokens.who(req)
		if !ok {
			r.logUnauthorized(req)
			w.Header().Set("WWW-Authenticate", `Bearer realm="warden-remediator approvals"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		id := strings.TrimPrefix(strings.TrimPrefix(req.URL.Path, "/api/v1/approvals"), "/")
		switch {
		case id == "" && req.Method == http.MethodGet:
			list, err := ListApprovals(req.Context(), r.kube, r.Policy().namespaces(), false)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			writeApprovalJSON(w, http.StatusOK, map[string]any{"approvals": nonNil(list)})
		case id != "" && !strings.Contains(id, "/") && req.Method == http.MethodPost:
			r.serveDecision(w, req, id, name)
		default:
			w.Header().Set("Allow", "GET (list), POST (/api/v1/approvals/ID)")
			http.Error(w, "use GET /api/v1/approvals or POST /api/v1/approvals/ID", http.StatusMethodNotAllowed)
		}
	})
}

func nonNil(l []Approval) []Approval {
	if l == nil {
		return []Approval{}
	}
	return l
}

func (r *Remediator) serveDecision(w http.ResponseWriter, req *http.Request, id, name string) {
	var body struct {
		Decision string `json:"decision"`
	}
	dec := json.NewDecoder(io.LimitReader(req.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || (body.Decision != "approve" && body.Decision != "deny") {
		http.Error(w, `body must be {"decision": "approve"} or {"decision": "deny"}`, http.StatusBadRequest)
		return
	}
	var lastErr error
	for _, ns := range r.Policy().namespaces() {
		a, err := Decide(req.Context(), r.kube, ns, id, body.Decision == "approve", name, r.now())
		if errors.Is(err, ErrApprovalNotFound) {
			lastErr = err
			continue
		}
		switch {
		case errors.Is(err, ErrApprovalDecided), errors.Is(err, ErrApprovalExpired):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			r.logger.Info("approval decided through the approvals endpoint", "id", id, "decision", a.Decision, "approver", name, "namespace", ns)
			writeApprovalJSON(w, http.StatusOK, a)
		}
		return
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%w: %s", ErrApprovalNotFound, id)
	}
	http.Error(w, lastErr.Error(), http.StatusNotFound)
}

func writeApprovalJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
