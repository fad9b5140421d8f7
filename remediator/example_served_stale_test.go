package remediator

import (
	"maps"
	"testing"

	"github.com/warden-sre/warden/remediator/actions"
)

// TestServedStaleExamplePolicy loads deploy/examples/remediator-policy-served-stale.yml
// with the policy loader and checks what it does with CertificateServedStale
// alerts as the exporter's rule raises them.
func TestServedStaleExamplePolicy(t *testing.T) {
	p, err := LoadPolicy("../deploy/examples/remediator-policy-served-stale.yml")
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"alertname": "CertificateServedStale", "severity": "warning",
		"namespace": "monitoring", "job": "warden-exporter", "instance": "10.0.5.2:9877",
		"source": "auth.rust-security.svc:443",
	}
	with := func(kv ...string) map[string]string {
		l := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	tests := []struct {
		name       string
		labels     map[string]string
		wantSkip   string
		wantNS     string
		wantDeploy string
	}{
		{"the Secret's Deployment is restarted", with("secret_namespace", "rust-security", "secret_name", "auth-service-tls"), "", "rust-security", "auth-service"},
		{"a Deployment outside the allow list", with("secret_namespace", "rust-security", "secret_name", "billing-tls"), ReasonNotAllowed, "", ""},
		{"a namespace outside the allow list", with("secret_namespace", "kube-system", "secret_name", "auth-service-tls"), ReasonNotAllowed, "", ""},
		{"another alert", with("alertname", "CertificateExpiringSoon", "secret_namespace", "rust-security", "secret_name", "auth-service-tls"), ReasonNoMatchingRule, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := p.evaluate(alert(tt.labels), false)
			if len(ds) != 1 {
				t.Fatalf("%d decisions, want 1", len(ds))
			}
			d := ds[0]
			if d.SkipReason != tt.wantSkip {
				t.Fatalf("skip reason %q (%s), want %q", d.SkipReason, d.Detail, tt.wantSkip)
			}
			if tt.wantSkip != "" {
				return
			}
			if d.Request.Kind != actions.Restart || d.Request.Namespace != tt.wantNS || d.Request.Deployment != tt.wantDeploy || d.DryRun {
				t.Errorf("request %+v, want a restart of %s/%s, not a dry run", d.Request, tt.wantNS, tt.wantDeploy)
			}
		})
	}
}
