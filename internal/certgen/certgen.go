// Package certgen creates certificate authorities, intermediates and leaf
// certificates with known validity periods for tests.
package certgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Options describe one certificate. Times are truncated to whole seconds,
// the precision X.509 stores.
type Options struct {
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	NotBefore   time.Time
	NotAfter    time.Time
	// Serial defaults to a random 63-bit number.
	Serial *big.Int
	// IsCA marks an authority (root or intermediate) that may sign others.
	IsCA bool
}

// Cert is a generated certificate and its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// SelfSigned creates a certificate signed by its own key: a root CA when
// o.IsCA is set, a self-signed server certificate otherwise.
func SelfSigned(o Options) (*Cert, error) {
	return issue(o, nil)
}

// Sign creates a certificate issued by c, which must be a CA.
func (c *Cert) Sign(o Options) (*Cert, error) {
	if c == nil || !c.Cert.IsCA {
		return nil, errors.New("certgen: the issuer is not a CA")
	}
	return issue(o, c)
}

func issue(o Options, parent *Cert) (*Cert, error) {
	if o.NotAfter.IsZero() || o.NotBefore.IsZero() {
		return nil, errors.New("certgen: NotBefore and NotAfter are required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certgen: generate key: %w", err)
	}
	serial := o.Serial
	if serial == nil {
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
		if err != nil {
			return nil, fmt.Errorf("certgen: serial: %w", err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"warden tests"}},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPAddresses,
		NotBefore:             o.NotBefore.Truncate(time.Second),
		NotAfter:              o.NotAfter.Truncate(time.Second),
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
	}
	if o.IsCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	issuerCert, issuerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		issuerCert, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("certgen: create certificate %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certgen: parse certificate %q: %w", o.CommonName, err)
	}
	return &Cert{Cert: cert, Key: key}, nil
}

// CertPEM is the certificate in PEM form.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM is the private key in PKCS #8 PEM form.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		// An ECDSA P-256 key generated above always marshals.
		panic(fmt.Sprintf("certgen: marshal key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ChainPEM concatenates the certificates in PEM form, in the given order.
func ChainPEM(certs ...*Cert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.CertPEM()...)
	}
	return out
}

// TLSCertificate is c with the given chain (intermediates, optionally the
// root) as a server would present it.
func (c *Cert) TLSCertificate(chain ...*Cert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, ch := range chain {
		tc.Certificate = append(tc.Certificate, ch.Cert.Raw)
	}
	return tc
}

// Chain is a root CA, an intermediate CA it signed and a leaf the
// intermediate signed, as most public and private PKIs look.
type Chain struct {
	Root, Intermediate, Leaf *Cert
}

// ChainOptions set the validity of each certificate in a Chain and the
// names of the leaf.
type ChainOptions struct {
	Root, Intermediate, Leaf Options
}

// NewChain creates root → intermediate → leaf.
func NewChain(o ChainOptions) (*Chain, error) {
	o.Root.IsCA, o.Intermediate.IsCA, o.Leaf.IsCA = true, true, false
	root, err := SelfSigned(o.Root)
	if err != nil {
		return nil, err
	}
	inter, err := root.Sign(o.Intermediate)
	if err != nil {
		return nil, err
	}
	leaf, err := inter.Sign(o.Leaf)
	if err != nil {
		return nil, err
	}
	return &Chain{Root: root, Intermediate: inter, Leaf: leaf}, nil
}
