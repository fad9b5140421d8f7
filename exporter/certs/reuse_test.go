package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

// certsHandshakes serves TLS on loopback with cfg and records, for every
// completed handshake, whether it resumed a session and which leaf serial
// it presented.
type certsHandshakes struct {
	mu      sync.Mutex
	resumed []bool
}

func (h *certsHandshakes) serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return h.serveWith(t, func() *tls.Config { return cfg })
}

// serveWith serves with the configuration config returns at each
// connection.
func (h *certsHandshakes) serveWith(t *testing.T, config func() *tls.Config) string {
	t.Helper()
	return certsServeTLSWith(t, config, nil, func(tc *tls.Conn) {
		h.mu.Lock()
		h.resumed = append(h.resumed, tc.ConnectionState().DidResume)
		h.mu.Unlock()
		// Until the client closes, so that it reads the session ticket.
		var b [1]byte
		_, _ = tc.Read(b[:])
	})
}

// nth waits for the n-th handshake and returns whether it resumed.
func (h *certsHandshakes) nth(t *testing.T, n int) bool {
	t.Helper()
	var resumed bool
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("handshake %d", n), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.resumed) < n {
			return false
		}
		resumed = h.resumed[n-1]
		return true
	})
	return resumed
}

func TestCertsEndpointResumesItsSessionAndReusesTheVerdict(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			chain := certsNewChain(t)
			ca := certsWriteFile(t, t.TempDir(), "ca.pem", chain.Root.CertPEM())
			var h certsHandshakes
			addr := h.serve(t, &tls.Config{Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)}, MaxVersion: version})
			c := certsEndpoints(t, &EndpointsConfig{CAFile: ca, Targets: []Endpoint{{Address: addr, ServerName: "auth.warden.test", Name: "auth"}}})

			for scrape := 1; scrape <= 3; scrape++ {
				got, err := certsCollect(t, certsCtx(t, 10*time.Second), c)
				if err != nil {
					t.Fatalf("scrape %d: %v", scrape, err)
				}
				if resumed := h.nth(t, scrape); resumed != (scrape > 1) {
					t.Errorf("scrape %d: handshake resumed = %v, want %v", scrape, resumed, scrape > 1)
				}
				// A resumed session reports the chain of the handshake
				// that created it, in full.
				if v := got.get(t, "x509_cert_not_after", "position", "leaf", "serial_number", "1003"); v != certsUnix(certsLeafOpts.NotAfter) {
					t.Errorf("scrape %d: leaf not_after = %v", scrape, v)
				}
				if n := got.count("x509_cert_not_after"); n != 2 {
					t.Errorf("scrape %d: %d certificates, want 2", scrape, n)
				}
				if v := got.get(t, "warden_certs_chain_verified", "source", "auth"); v != 1 {
					t.Errorf("scrape %d: chain_verified = %v, want 1", scrape, v)
				}
				if n := c.verified.len(); n != 1 {
					t.Errorf("scrape %d: %d cached verdicts, want 1 (one chain)", scrape, n)
				}
			}
		})
	}
}

// A TLS 1.3 server without session tickets (PostgreSQL turns them off):
// the wait for a ticket after the first full handshake brings none, and the
// following full handshakes do not wait until a full-handshake interval
// has passed.
func TestCertsEndpointWithoutTicketsIsNotWaitedForAgain(t *testing.T) {
	chain := certsNewChain(t)
	var h certsHandshakes
	addr := h.serve(t, &tls.Config{Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)}, SessionTicketsDisabled: true})
	c := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{{Address: addr, ServerName: "auth.warden.test", Name: "auth"}}})
	sessions := c.targets[0].sessions
	for scrape := 1; scrape <= 2; scrape++ {
		before := time.Now()
		got, err := certsCollect(t, certsCtx(t, 10*time.Second), c)
		if err != nil {
			t.Fatal(err)
		}
		if v := got.get(t, "warden_certs_source_success", "source", "auth"); v != 1 {
			t.Fatalf("scrape %d: source_success = %v", scrape, v)
		}
		if h.nth(t, scrape) {
			t.Errorf("scrape %d resumed a session the server never issued", scrape)
		}
		if sessions.expectTicket(time.Now()) {
			t.Errorf("scrape %d: still expecting a ticket", scrape)
		}
		if scrape == 2 && !sessions.ticketlessUntil.Before(before.Add(certsFullHandshakeEvery)) {
			t.Errorf("scrape 2 waited again: ticketless until %v, set at the first scrape", sessions.ticketlessUntil)
		}
	}
	if !sessions.expectTicket(time.Now().Add(certsFullHandshakeEvery)) {
		t.Error("no ticket is expected again after a full-handshake interval")
	}
}

// A server that reloads its certificate but keeps its session ticket keys
// resumes sessions of the old certificate: the full handshake that comes
// when due reads the new one.
func TestCertsEndpointFullHandshakeWhenDueReadsAReloadedCertificate(t *testing.T) {
	chain := certsNewChain(t)
	renewed, err := chain.Intermediate.Sign(certgen.Options{CommonName: "auth.warden.test", DNSNames: []string{"auth.warden.test"},
		NotBefore: certsT0.AddDate(0, 6, 0), NotAfter: certsT0.AddDate(2, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	serving := chain.Leaf.TLSCertificate(chain.Intermediate)
	var h certsHandshakes
	addr := h.serve(t, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		return &serving, nil
	}})
	c := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{{Address: addr, ServerName: "auth.warden.test", Name: "auth"}}})
	leafSerial := func() string {
		t.Helper()
		got, err := certsCollect(t, certsCtx(t, 10*time.Second), c)
		if err != nil {
			t.Fatal(err)
		}
		for _, serial := range []string{chain.Leaf.Cert.SerialNumber.String(), renewed.Cert.SerialNumber.String()} {
			if _, ok := got.find("x509_cert_not_after", "position", "leaf", "serial_number", serial); ok {
				return serial
			}
		}
		t.Fatalf("no leaf with a known serial in %v", got.keys())
		return ""
	}

	if s := leafSerial(); s != chain.Leaf.Cert.SerialNumber.String() {
		t.Fatalf("first scrape read serial %s", s)
	}
	mu.Lock()
	serving = renewed.TLSCertificate(chain.Intermediate)
	mu.Unlock()
	if s := leafSerial(); s != chain.Leaf.Cert.SerialNumber.String() || !h.nth(t, 2) {
		t.Fatalf("before the full handshake is due: serial %s, resumed %v; want the resumed session's old serial", s, h.nth(t, 2))
	}
	// Due now.
	c.targets[0].sessions.fullHandshake(time.Now().Add(-certsFullHandshakeEvery))
	if s := leafSerial(); s != renewed.Cert.SerialNumber.String() || h.nth(t, 3) {
		t.Fatalf("full handshake due: serial %s, resumed %v; want the reloaded certificate's serial %s from a full handshake",
			s, h.nth(t, 3), renewed.Cert.SerialNumber)
	}
}

// The verdict is cached by chain and by the CA file's contents: rotating the
// CA file changes the verdict at the next scrape.
func TestCertsEndpointRotatedCAFileIsReadAgain(t *testing.T) {
	chain := certsNewChain(t)
	other, err := certgen.SelfSigned(certgen.Options{CommonName: "Other CA", IsCA: true, NotBefore: certsT0, NotAfter: certsT0.AddDate(10, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	ca := certsWriteFile(t, t.TempDir(), "ca.pem", other.CertPEM())
	addr := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	c := certsEndpoints(t, &EndpointsConfig{CAFile: ca, Targets: []Endpoint{{Address: addr, ServerName: "auth.warden.test", Name: "auth"}}})

	steps := []struct {
		name string
		ca   []byte
		want float64
	}{
		{"another CA", nil, 0},
		{"unchanged", nil, 0},
		{"rotated to the chain's root", certgen.ChainPEM(other, chain.Root), 1},
		{"unchanged after the rotation", nil, 1},
		{"unreadable: the previous roots stay", []byte("not a certificate"), 1},
	}
	for _, s := range steps {
		if s.ca != nil {
			if err := os.WriteFile(ca, s.ca, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		got, err := certsCollect(t, certsCtx(t, 10*time.Second), c)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if v := got.get(t, "warden_certs_chain_verified", "source", "auth"); v != s.want {
			t.Errorf("%s: chain_verified = %v, want %v", s.name, v, s.want)
		}
	}
}

func TestCertsVerdictHoldsUntilTheNextValidityBoundary(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cert := func(notBefore, notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter}
	}
	tests := []struct {
		name      string
		presented []*x509.Certificate
		chains    [][]*x509.Certificate
		want      time.Time
	}{
		{"far from any boundary: the maximum age", []*x509.Certificate{cert(now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0))}, nil, now.Add(certsVerdictMaxAge)},
		{"leaf expires first: just after its NotAfter", []*x509.Certificate{cert(now.AddDate(-1, 0, 0), now.Add(time.Minute))}, nil, now.Add(time.Minute + time.Nanosecond)},
		{"not yet valid: its NotBefore", []*x509.Certificate{cert(now.Add(10*time.Minute), now.AddDate(1, 0, 0))}, nil, now.Add(10 * time.Minute)},
		{"already expired: nothing changes any more", []*x509.Certificate{cert(now.AddDate(-2, 0, 0), now.AddDate(-1, 0, 0))}, nil, now.Add(certsVerdictMaxAge)},
		{"the root of a verified chain expires first",
			[]*x509.Certificate{cert(now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0))},
			[][]*x509.Certificate{{cert(now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0)), cert(now.AddDate(-5, 0, 0), now.Add(30*time.Minute))}},
			now.Add(30*time.Minute + time.Nanosecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := certsVerdictUntil(now, tt.presented, tt.chains); !got.Equal(tt.want) {
				t.Errorf("until = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCertsVerifyCacheDropsVerdictsUnusedForTwoScrapes(t *testing.T) {
	c := newCertsVerifyCache()
	a, b := certsVerifyKey{name: "a"}, certsVerifyKey{name: "b"}
	future := time.Now().Add(time.Hour)
	s1 := c.begin()
	c.put(a, true, future, s1)
	c.put(b, false, future, s1)
	c.end(s1)
	s2 := c.begin()
	if v, ok := c.get(a, s2); !ok || !v {
		t.Fatalf("a after one scrape: %v %v", v, ok)
	}
	c.end(s2)
	s3 := c.begin()
	c.end(s3)
	if _, ok := c.get(b, s3); ok {
		t.Error("b, unused in scrapes 2 and 3, is still cached")
	}
	if v, ok := c.get(a, s3); !ok || !v {
		t.Errorf("a, used in scrape 2, is gone: %v %v", v, ok)
	}
	c.put(a, true, time.Now().Add(-time.Second), s3)
	if _, ok := c.get(a, s3); ok {
		t.Error("a verdict past its validity is served")
	}
}
