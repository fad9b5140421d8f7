package certs

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

func TestCertsSubjectKey(t *testing.T) {
	cert := func(cn string, dns []string, ips ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
		for _, ip := range ips {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(ip))
		}
		return c
	}
	base := cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"}, "10.0.0.1")
	tests := []struct {
		name string
		c    *x509.Certificate
		same bool
	}{
		{"identical", cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"}, "10.0.0.1"), true},
		{"SANs in another order, names in another case", cert("Auth.Warden.Test", []string{"AUTH.rust-security.svc", "auth.warden.test"}, "10.0.0.1"), true},
		{"an IPv4 address in its 16-byte form", func() *x509.Certificate {
			c := cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"})
			c.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1).To16()}
			return c
		}(), true},
		{"a repeated SAN", cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc", "auth.warden.test"}, "10.0.0.1"), true},
		{"another common name", cert("db.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"}, "10.0.0.1"), false},
		{"one DNS name fewer", cert("auth.warden.test", []string{"auth.warden.test"}, "10.0.0.1"), false},
		{"one DNS name more", cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc", "x.warden.test"}, "10.0.0.1"), false},
		{"another IP address", cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"}, "10.0.0.2"), false},
		{"no IP address", cert("auth.warden.test", []string{"auth.warden.test", "auth.rust-security.svc"}), false},
		{"a name moved from the DNS SANs to the common name", cert("auth.warden.test,auth.rust-security.svc", []string{"auth.warden.test"}, "10.0.0.1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if same := certsSubjectKey(tt.c) == certsSubjectKey(base); same != tt.same {
				t.Errorf("same subject = %v, want %v", same, tt.same)
			}
		})
	}
}

func TestCertsServedStaleDecision(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	leaf := func(serial int64, notBefore time.Time) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "auth.warden.test"}, DNSNames: []string{"auth.warden.test"},
			SerialNumber: big.NewInt(serial), NotBefore: notBefore}
	}
	type secret struct {
		namespace, name string
		leaf            *x509.Certificate
	}
	tests := []struct {
		name       string
		secrets    []secret
		served     *x509.Certificate
		wantFound  bool
		wantStale  bool
		wantSecret string
	}{
		{"the Secret holds the served certificate", []secret{{"a", "auth-tls", leaf(1, t0)}}, leaf(1, t0), true, false, "a/auth-tls"},
		{"renewed in the Secret, old one served", []secret{{"a", "auth-tls", leaf(2, t0.AddDate(0, 2, 0))}}, leaf(1, t0), true, true, "a/auth-tls"},
		{"served newer than the Secret", []secret{{"a", "auth-tls", leaf(1, t0)}}, leaf(2, t0.AddDate(0, 2, 0)), true, false, "a/auth-tls"},
		{"another serial with the same start is not a renewal", []secret{{"a", "auth-tls", leaf(2, t0)}}, leaf(1, t0), true, false, "a/auth-tls"},
		{"a copy elsewhere still holds the served one", []secret{
			{"b", "auth-tls", leaf(2, t0.AddDate(0, 2, 0))},
			{"a", "auth-tls", leaf(1, t0)},
		}, leaf(1, t0), true, false, "a/auth-tls"},
		{"the newest of several Secrets is the renewal", []secret{
			{"a", "auth-old-tls", leaf(2, t0.AddDate(0, 1, 0))},
			{"c", "auth-tls", leaf(3, t0.AddDate(0, 2, 0))},
		}, leaf(1, t0), true, true, "c/auth-tls"},
		{"equal starts: the first by namespace and name", []secret{
			{"c", "auth-tls", leaf(2, t0.AddDate(0, 2, 0))},
			{"b", "z-tls", leaf(3, t0.AddDate(0, 2, 0))},
			{"b", "auth-tls", leaf(4, t0.AddDate(0, 2, 0))},
		}, leaf(1, t0), true, true, "b/auth-tls"},
		{"no Secret with the subject", []secret{{"a", "db-tls", &x509.Certificate{Subject: pkix.Name{CommonName: "db.warden.test"},
			SerialNumber: big.NewInt(9), NotBefore: t0.AddDate(1, 0, 0)}}}, leaf(1, t0), false, false, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := certsSecretIndex{}
			for _, s := range tt.secrets {
				idx.add(newCertsSecretLeaf(s.namespace, s.name, s.leaf), certsSubjectKey(s.leaf))
			}
			secret, stale, found := idx.servedStale(tt.served)
			if found != tt.wantFound || stale != tt.wantStale || secret.namespace+"/"+secret.name != tt.wantSecret {
				t.Errorf("servedStale = %s/%s stale %v found %v, want %s stale %v found %v",
					secret.namespace, secret.name, stale, found, tt.wantSecret, tt.wantStale, tt.wantFound)
			}
		})
	}
}

// certsRestartableTLS serves on one loopback port with the tls.Config in
// force; restart replaces it with a new one (new certificate, new session
// ticket keys), as a restarted pod behind the same address would.
type certsRestartableTLS struct {
	cfg atomic.Pointer[tls.Config]
}

func (s *certsRestartableTLS) restart(cert tls.Certificate) {
	s.cfg.Store(&tls.Config{Certificates: []tls.Certificate{cert}})
}

func (s *certsRestartableTLS) serve(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	s.restart(cert)
	var h certsHandshakes
	return h.serveWith(t, func() *tls.Config { return s.cfg.Load() })
}

// TestCertsServedStaleWithSecretsInTheAPIServer: a Secret renewed in the
// API server while the endpoint still serves the old certificate; the
// endpoint restarted with the renewed one; an endpoint with a subject no
// Secret has.
func TestCertsServedStaleWithSecretsInTheAPIServer(t *testing.T) {
	k := testenv.StartKube(t)
	ctx := t.Context()
	chain := certsNewChain(t)
	renewedOpts := certsLeafOpts
	renewedOpts.Serial = big.NewInt(2003)
	renewedOpts.NotBefore = certsLeafOpts.NotBefore.AddDate(0, 2, 0)
	renewedOpts.NotAfter = certsLeafOpts.NotAfter.AddDate(0, 2, 0)
	renewed, err := chain.Intermediate.Sign(renewedOpts)
	if err != nil {
		t.Fatal(err)
	}
	// grafana's certificate is only in a Secret; cache's only on its
	// endpoint.
	grafana, err := chain.Intermediate.Sign(certgen.Options{CommonName: "grafana.warden.test", DNSNames: []string{"grafana.warden.test"},
		NotBefore: certsT0, NotAfter: certsT0.AddDate(3, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := chain.Intermediate.Sign(certgen.Options{CommonName: "cache.warden.test", DNSNames: []string{"cache.warden.test"},
		NotBefore: certsT0, NotAfter: certsT0.AddDate(3, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}

	for _, ns := range []string{"rust-security", "platform"} {
		certsFleetNamespace(t, ctx, k.Client, ns)
	}
	putSecret := func(ns, name string, leaf *certgen.Cert) {
		t.Helper()
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certgen.ChainPEM(leaf, chain.Intermediate), corev1.TLSPrivateKeyKey: leaf.KeyPEM()},
		}
		if _, err := k.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err == nil {
			return
		}
		if _, err := k.Client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("put Secret %s/%s: %v", ns, name, err)
		}
	}
	putSecret("rust-security", "auth-service-tls", chain.Leaf)
	// A Secret of another subject, never compared with the endpoints.
	putSecret("platform", "grafana-tls", grafana)

	var auth certsRestartableTLS
	authAddr := auth.serve(t, chain.Leaf.TLSCertificate(chain.Intermediate))
	renewedAddr := certsServeTLS(t, renewed.TLSCertificate(chain.Intermediate), nil)
	cacheAddr := certsServeTLS(t, cache.TLSCertificate(chain.Intermediate), nil)
	e := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{
		{Address: authAddr, ServerName: "auth.warden.test", Name: "auth"},
		{Address: renewedAddr, ServerName: "auth.warden.test", Name: "auth-canary"},
		{Address: cacheAddr, ServerName: "cache.warden.test", Name: "cache"},
	}})
	secrets := NewKubernetes(&KubernetesConfig{}, certsCoreClient(t, k.Config), slog.New(slog.DiscardHandler))
	e.CompareWithSecrets(secrets)

	scrape := func() certsSamples {
		t.Helper()
		if _, err := certsCollect(t, certsCtx(t, 30*time.Second), secrets); err != nil {
			t.Fatalf("Secrets: %v", err)
		}
		got, err := certsCollect(t, certsCtx(t, 30*time.Second), e)
		if err != nil {
			t.Fatalf("endpoints: %v", err)
		}
		return got
	}
	type want struct {
		source, secret string
		value          float64
	}
	check := func(step string, got certsSamples, wants []want) {
		t.Helper()
		if n := got.count("warden_certs_served_stale"); n != len(wants) {
			t.Errorf("%s: %d served_stale series, want %d: %v", step, n, len(wants), got.matching("warden_certs_served_stale"))
		}
		for _, w := range wants {
			ns, name, _ := strings.Cut(w.secret, "/")
			if v := got.get(t, "warden_certs_served_stale", "source", w.source, "secret_namespace", ns, "secret_name", name); v != w.value {
				t.Errorf("%s: served_stale{source=%s} = %v, want %v", step, w.source, v, w.value)
			}
		}
	}

	// The endpoints' subjects are learnt at their first scrape; the
	// Secrets of those subjects are indexed from the next listing on.
	got, err := certsCollect(t, certsCtx(t, 30*time.Second), e)
	if err != nil {
		t.Fatal(err)
	}
	check("before any listing", got, nil)

	check("Secret and endpoint agree", scrape(), []want{
		{"auth", "rust-security/auth-service-tls", 0},
		{"auth-canary", "rust-security/auth-service-tls", 0},
	})

	putSecret("rust-security", "auth-service-tls", renewed)
	check("renewed in the Secret, not served", scrape(), []want{
		{"auth", "rust-security/auth-service-tls", 1},
		{"auth-canary", "rust-security/auth-service-tls", 0},
	})

	auth.restart(renewed.TLSCertificate(chain.Intermediate))
	check("restarted with the renewed certificate", scrape(), []want{
		{"auth", "rust-security/auth-service-tls", 0},
		{"auth-canary", "rust-security/auth-service-tls", 0},
	})

	e.CompareWithSecrets(nil)
	got, err = certsCollect(t, certsCtx(t, 30*time.Second), e)
	if err != nil {
		t.Fatal(err)
	}
	check("unlinked", got, nil)
}
