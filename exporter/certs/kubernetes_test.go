package certs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/kubecore"
	"github.com/warden-sre/warden/internal/testenv"
)

// certsKubeconfig writes a kubeconfig file for cfg, as an operator would
// hand one to the exporter.
func certsKubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, path, ""); err != nil {
		t.Fatal(err)
	}
	return path
}

// certsCoreClient is the exporter's client for cfg.
func certsCoreClient(t testing.TB, cfg *rest.Config) *kubecore.Client {
	t.Helper()
	c, err := kubecore.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type certsRoundTripFunc func(*http.Request) (*http.Response, error)

func (f certsRoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// certsSecretLists records the Secret list requests a client makes.
type certsSecretLists struct {
	mu       sync.Mutex
	requests []string // namespace path and whether a continue token was sent
}

func (l *certsSecretLists) client(t *testing.T, cfg *rest.Config) *kubecore.Client {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return certsRoundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/secrets") {
				q := r.URL.Query()
				l.mu.Lock()
				l.requests = append(l.requests, fmt.Sprintf("%s limit=%s continue=%t", r.URL.Path, q.Get("limit"), q.Get("continue") != ""))
				l.mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	}
	return certsCoreClient(t, cfg)
}

func TestCertsKubernetesSecrets(t *testing.T) {
	k := testenv.StartKube(t)
	ctx := t.Context()
	chain := certsNewChain(t)
	crt := certgen.ChainPEM(chain.Leaf, chain.Intermediate)
	key := chain.Leaf.KeyPEM()
	const badCrt = "this is not a certificate but it is secret"

	for _, ns := range []string{"certs-a", "certs-b", "certs-other"} {
		if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create := func(ns, name string, typ corev1.SecretType, labels map[string]string, crt []byte) {
		t.Helper()
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Type:       typ,
			Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
		}
		if _, err := k.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create secret %s/%s: %v", ns, name, err)
		}
	}
	auth := map[string]string{"app": "auth"}
	// 105 in one namespace: more than one page of 100.
	for i := range 105 {
		create("certs-a", fmt.Sprintf("tls-%03d", i), corev1.SecretTypeTLS, auth, crt)
	}
	for i := range 20 {
		create("certs-b", fmt.Sprintf("tls-%03d", i), corev1.SecretTypeTLS, auth, crt)
	}
	create("certs-b", "bad-crt", corev1.SecretTypeTLS, auth, []byte(badCrt))
	create("certs-b", "empty-crt", corev1.SecretTypeTLS, auth, []byte{})
	// Not selected: wrong label, wrong type, namespace not listed.
	create("certs-a", "unlabelled", corev1.SecretTypeTLS, nil, crt)
	create("certs-a", "opaque", corev1.SecretTypeOpaque, auth, crt)
	create("certs-other", "tls-other", corev1.SecretTypeTLS, auth, crt)

	const wantSources = 105 + 20 + 2

	t.Run("through a kubeconfig file", func(t *testing.T) {
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		client, err := kubecore.New(kubecore.Options{Kubeconfig: certsKubeconfig(t, k.Config)})
		if err != nil {
			t.Fatal(err)
		}
		c := NewKubernetes(&KubernetesConfig{Namespaces: []string{"certs-a", "certs-b"}, LabelSelector: "app=auth"}, client, logger)
		if c.Name() != "certs/kubernetes" {
			t.Errorf("name = %q", c.Name())
		}
		got, err := certsCollect(t, certsCtx(t, 30*time.Second), c)
		if err != nil {
			t.Fatalf("Collect: %v", err)
		}
		if n := got.count("warden_certs_source_success"); n != wantSources {
			t.Errorf("%d sources, want %d", n, wantSources)
		}
		if n := got.count("x509_cert_not_after"); n != 2*(wantSources-2) {
			t.Errorf("%d not_after series, want %d", n, 2*(wantSources-2))
		}
		for _, want := range []struct {
			position string
			cert     *certgen.Cert
		}{{"leaf", chain.Leaf}, {"intermediate", chain.Intermediate}} {
			lbl := []string{"source_kind", "kubernetes", "source", "certs-a/tls-104", "position", want.position,
				"subject_CN", want.cert.Cert.Subject.CommonName, "issuer_CN", want.cert.Cert.Issuer.CommonName,
				"serial_number", want.cert.Cert.SerialNumber.String()}
			if v := got.get(t, "x509_cert_not_after", lbl...); v != certsUnix(want.cert.Cert.NotAfter) {
				t.Errorf("%s not_after = %v, want %v", want.position, v, certsUnix(want.cert.Cert.NotAfter))
			}
			if v := got.get(t, "x509_cert_not_before", lbl...); v != certsUnix(want.cert.Cert.NotBefore) {
				t.Errorf("%s not_before = %v, want %v", want.position, v, certsUnix(want.cert.Cert.NotBefore))
			}
		}
		if v := got.get(t, "warden_certs_chain_earliest_not_after", "source", "certs-b/tls-000"); v != certsUnix(certsLeafOpts.NotAfter) {
			t.Errorf("earliest not_after = %v, want %v", v, certsUnix(certsLeafOpts.NotAfter))
		}
		for source, want := range map[string]float64{"certs-a/tls-000": 1, "certs-b/tls-019": 1, "certs-b/bad-crt": 0, "certs-b/empty-crt": 0} {
			if v := got.get(t, "warden_certs_source_success", "source", source); v != want {
				t.Errorf("source_success{source=%s} = %v, want %v", source, v, want)
			}
		}
		for reason, want := range map[string]float64{"parse": 1, "not_found": 1, "list": 0, "timeout": 0} {
			if v := got.get(t, "warden_certs_errors_total", "reason", reason); v != want {
				t.Errorf("errors_total{reason=%q} = %v, want %v", reason, v, want)
			}
		}
		if !strings.Contains(logs.String(), "certs-b/bad-crt") {
			t.Errorf("the bad Secret is not logged at debug level: %s", logs.String())
		}
		keyBody := strings.Split(string(key), "\n")[1]
		for _, secret := range []string{badCrt, "PRIVATE KEY", keyBody[:20]} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("Secret data %q in the logs: %s", secret, logs.String())
			}
		}
	})

	t.Run("pages of 100", func(t *testing.T) {
		tests := []struct {
			name         string
			namespaces   []string
			wantRequests []string
			wantSources  int
		}{
			{
				name:       "listed namespaces",
				namespaces: []string{"certs-a", "certs-b"},
				wantRequests: []string{
					"/api/v1/namespaces/certs-a/secrets limit=100 continue=false",
					"/api/v1/namespaces/certs-a/secrets limit=100 continue=true",
					"/api/v1/namespaces/certs-b/secrets limit=100 continue=false",
				},
				wantSources: wantSources,
			},
			{
				name: "all namespaces",
				wantRequests: []string{
					"/api/v1/secrets limit=100 continue=false",
					"/api/v1/secrets limit=100 continue=true",
				},
				wantSources: wantSources + 1,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var lists certsSecretLists
				c := NewKubernetes(&KubernetesConfig{Namespaces: tt.namespaces, LabelSelector: "app=auth"},
					lists.client(t, k.Config), slog.New(slog.DiscardHandler))
				c.pageSize = 100
				got, err := certsCollect(t, certsCtx(t, 30*time.Second), c)
				if err != nil {
					t.Fatalf("Collect: %v", err)
				}
				if n := got.count("warden_certs_source_success"); n != tt.wantSources {
					t.Errorf("%d sources, want %d", n, tt.wantSources)
				}
				if strings.Join(lists.requests, "\n") != strings.Join(tt.wantRequests, "\n") {
					t.Errorf("list requests:\n%s\nwant:\n%s", strings.Join(lists.requests, "\n"), strings.Join(tt.wantRequests, "\n"))
				}
			})
		}
	})

	t.Run("forbidden list fails the collector", func(t *testing.T) {
		cfg, err := k.AddUser("certs-nobody")
		if err != nil {
			t.Fatal(err)
		}
		c := NewKubernetes(&KubernetesConfig{Namespaces: []string{"certs-a"}}, certsCoreClient(t, cfg), slog.New(slog.DiscardHandler))
		got, err := certsCollect(t, certsCtx(t, 30*time.Second), c)
		if err == nil || !strings.Contains(err.Error(), "list TLS Secrets in namespace certs-a") || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("Collect error = %v, want a forbidden list error", err)
		}
		if v := got.get(t, "warden_certs_errors_total", "reason", "list"); v != 1 {
			t.Errorf("errors_total{reason=list} = %v, want 1", v)
		}
	})

	t.Run("scrape deadline during the list", func(t *testing.T) {
		c := NewKubernetes(&KubernetesConfig{}, certsCoreClient(t, k.Config), slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
		defer cancel()
		<-ctx.Done()
		got, err := certsCollect(t, ctx, c)
		if err == nil {
			t.Fatal("Collect with an expired deadline succeeded")
		}
		if v := got.get(t, "warden_certs_errors_total", "reason", "timeout"); v != 1 {
			t.Errorf("errors_total{reason=timeout} = %v, want 1", v)
		}
	})
}
