package exporter

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

// TestCertsEndpointsAreComparedWithSecrets builds the exporter with
// certs.endpoints and certs.kubernetes against a real API server: the set
// links the two collectors, so an endpoint serving the certificate its
// Secret held before a renewal reads warden_certs_served_stale 1; a reload
// without certs.kubernetes unlinks them.
func TestCertsEndpointsAreComparedWithSecrets(t *testing.T) {
	k := testenv.StartKube(t)
	ctx := t.Context()
	chain := inventoryChain(t)
	renewed, err := chain.Intermediate.Sign(certgen.Options{CommonName: chain.Leaf.Cert.Subject.CommonName,
		DNSNames: chain.Leaf.Cert.DNSNames, IPAddresses: chain.Leaf.Cert.IPAddresses,
		NotBefore: chain.Leaf.Cert.NotBefore.Add(time.Hour), NotAfter: chain.Leaf.Cert.NotAfter.Add(time.Hour), Serial: big.NewInt(77)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rust-security"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "rust-security", Name: "auth-service-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certgen.ChainPEM(renewed, chain.Intermediate), corev1.TLSPrivateKeyKey: renewed.KeyPEM()},
	}
	if _, err := k.Client.CoreV1().Secrets("rust-security").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The endpoint still serves the certificate before the renewal.
	tlsServer := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsServer.TLS = &tls.Config{Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)}}
	tlsServer.StartTLS()
	t.Cleanup(tlsServer.Close)

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(k.Config, kubeconfig, ""); err != nil {
		t.Fatal(err)
	}
	endpoints := fmt.Sprintf(`
  endpoints:
    targets:
    - {name: auth, address: %q, server_name: auth.warden.test}`, tlsServer.Listener.Addr().String())
	build := func(prev *Set, certs string) *Set {
		t.Helper()
		cfg, err := ParseConfig(fmt.Appendf(nil, "kubernetes:\n  kubeconfig: %q\ncerts:%s\n", kubeconfig, certs))
		if err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
		set, err := Build(ctx, cfg, slog.New(slog.DiscardHandler), prev)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		t.Cleanup(func() { _ = set.Close() })
		return set
	}
	stale := func(set *Set) (float64, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		reg := prometheus.NewRegistry()
		reg.MustRegister(scrapeResult{metrics: scrape(ctx, slog.New(slog.DiscardHandler), set.Collectors), timeout: 30 * time.Second})
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "warden_certs_served_stale" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["source"] == "auth" && labels["secret_namespace"] == "rust-security" && labels["secret_name"] == "auth-service-tls" {
					return m.GetGauge().GetValue(), true
				}
				t.Errorf("unexpected series %v", labels)
			}
		}
		return 0, false
	}

	set := build(nil, endpoints+"\n  kubernetes:\n    namespaces: [rust-security]")
	// The endpoint's subject is learnt at its first scrape, the Secret
	// indexed at the next listing: the series comes within three scrapes.
	var v float64
	found := false
	for range 3 {
		if v, found = stale(set); found {
			break
		}
	}
	if !found || v != 1 {
		t.Fatalf("warden_certs_served_stale = %v (found %v), want 1", v, found)
	}

	// Reloaded without certs.kubernetes: the endpoints collector is
	// carried over, no longer compared.
	set = build(set, endpoints)
	if v, found := stale(set); found {
		t.Errorf("after the reload without certs.kubernetes: warden_certs_served_stale = %v, want no series", v)
	}
}
