package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
)

// TestStatusPageIsServedAtRootBehindTheWebhookCredentials checks the
// wiring: / is the status page, for a browser with basic auth, and
// nothing without credentials.
func TestStatusPageIsServedAtRootBehindTheWebhookCredentials(t *testing.T) {
	dir := t.TempDir()
	tokenFile := testenv.WriteFile(t, dir, "token", "status-token\n")
	pwFile := testenv.WriteFile(t, dir, "password", "sre-password\n")
	policy := testenv.WriteFile(t, dir, "remediator.yml", restartPolicy("r", "A", "ns"))
	p := startRemediator(t, policy, "--web.bearer-token-file="+tokenFile,
		"--web.basic-auth.username=sre", "--web.basic-auth.password-file="+pwFile)
	get := func(auth string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, p.URL+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	code, hdr, _ := get("")
	if code != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("GET / without credentials: %d, WWW-Authenticate %q; want 401 with a Basic challenge", code, hdr.Get("WWW-Authenticate"))
	}
	code, hdr, body := get(basicAuth("sre", "sre-password"))
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / with basic auth: %d %q:\n%s", code, hdr.Get("Content-Type"), body)
	}
	for _, want := range []string{"warden-remediator-test", `http-equiv="refresh"`, "restart"} {
		if !strings.Contains(body, want) {
			t.Errorf("the status page lacks %q:\n%s", want, body)
		}
	}
}
