package demo

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warden-sre/warden/internal/certgen"
)

// The demo's certificates: a private root and intermediate CA issue every
// server certificate, as an internal PKI (or cert-manager with a CA issuer)
// does. The exporter reads them from all three kinds of source: TLS
// endpoints (PostgreSQL, its replica and Redis's TLS port), PEM files on
// disk and a kubernetes.io/tls Secret.
const (
	// tlsSecret is the auth-service's certificate in the API server;
	// stepCertificateExpiry replaces it with one about to expire.
	tlsSecret = "auth-service-tls"
	// serverValidity is how long the healthy server certificates stay
	// valid, far beyond the 14-day warning of CertificateExpiringSoon.
	serverValidity = 90 * 24 * time.Hour
	// expiringValidity is what is left of the certificate the failed
	// renewal leaves behind: inside CertificateExpiringSoon's window (3 to
	// 14 days), so that alert, and no other, fires.
	expiringValidity = 10 * 24 * time.Hour
)

// pki holds the demo's CA and where its files are.
type pki struct {
	root, intermediate *certgen.Cert
	// rootFile is the root alone: the exporter verifies chains against it.
	rootFile string
	// pemDir holds the PEM files the exporter's files source reads.
	pemDir string
	// keyDir holds private keys, apart from pemDir.
	keyDir string
}

// newPKI creates the CA and writes the PEM files a host would have: the CA
// bundle and the full chain of an nginx in front of auth-service.
func newPKI(dir string) (*pki, error) {
	now := time.Now()
	p := &pki{rootFile: filepath.Join(dir, "tls", "root-ca.crt"), pemDir: filepath.Join(dir, "certs"), keyDir: filepath.Join(dir, "tls")}
	for _, d := range []string{p.pemDir, p.keyDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	p.root, err = certgen.SelfSigned(certgen.Options{CommonName: "warden demo root CA", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0)})
	if err != nil {
		return nil, err
	}
	p.intermediate, err = p.root.Sign(certgen.Options{CommonName: "warden demo issuing CA", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(3, 0, 0)})
	if err != nil {
		return nil, err
	}
	gateway, err := p.issue("auth.example.com", now, serverValidity)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		p.rootFile:                               p.root.CertPEM(),
		filepath.Join(p.pemDir, "ca-bundle.pem"): certgen.ChainPEM(p.root, p.intermediate),
		filepath.Join(p.pemDir, "auth-gateway-fullchain.pem"): certgen.ChainPEM(gateway, p.intermediate),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// issue signs a server certificate for name (and 127.0.0.1, where every
// demo server listens), valid from notBefore (less an hour, for clock skew)
// until notBefore+validity.
func (p *pki) issue(name string, notBefore time.Time, validity time.Duration) (*certgen.Cert, error) {
	return p.intermediate.Sign(certgen.Options{
		CommonName:  name,
		DNSNames:    []string{name, "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   notBefore.Add(-time.Hour),
		NotAfter:    notBefore.Add(validity),
	})
}

// serverFiles issues a server certificate and writes its chain and key
// under keyDir, for servers that read files (Redis).
func (p *pki) serverFiles(name string) (certFile, keyFile string, err error) {
	c, err := p.issue(name, time.Now(), serverValidity)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.keyDir, name+".crt"), filepath.Join(p.keyDir, name+".key")
	if err := os.WriteFile(certFile, certgen.ChainPEM(c, p.intermediate), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, c.KeyPEM(), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// tlsSecretObject is auth-service's kubernetes.io/tls Secret holding c.
func (p *pki) tlsSecretObject(c *certgen.Cert) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tlsSecret, Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": "auth-service"}},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certgen.ChainPEM(c, p.intermediate),
			corev1.TLSPrivateKeyKey: c.KeyPEM(),
		},
	}
}

// createTLSSecret stores a healthy certificate for auth-service in the API
// server, as cert-manager would.
func (e *Env) createTLSSecret(ctx context.Context) error {
	c, err := e.pki.issue("auth.rust-security.svc", time.Now(), serverValidity)
	if err != nil {
		return err
	}
	if _, err := e.Kube.Client.CoreV1().Secrets(Namespace).Create(ctx, e.pki.tlsSecretObject(c), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Secret %s: %w", tlsSecret, err)
	}
	return nil
}

// replaceTLSSecret puts a certificate that expires after left into
// auth-service's Secret: what a renewal that stopped working leaves behind,
// once the old certificate has aged. It returns the new certificate.
func (e *Env) replaceTLSSecret(ctx context.Context, left time.Duration) (*certgen.Cert, error) {
	notBefore := time.Now().Add(left - serverValidity)
	c, err := e.pki.issue("auth.rust-security.svc", notBefore, serverValidity)
	if err != nil {
		return nil, err
	}
	if _, err := e.Kube.Client.CoreV1().Secrets(Namespace).Update(ctx, e.pki.tlsSecretObject(c), metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("update Secret %s: %w", tlsSecret, err)
	}
	return c, nil
}
