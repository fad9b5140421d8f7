package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/exporter/exportertest"
	"github.com/warden-sre/warden/internal/certgen"
	"github.com/warden-sre/warden/internal/testenv"
)

// Fixed dates, so expected values are exact.
var (
	certsT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	certsRootOpts  = certgen.Options{CommonName: "Warden Test Root CA", NotBefore: certsT0, NotAfter: certsT0.AddDate(10, 0, 0), Serial: big.NewInt(1001)}
	certsInterOpts = certgen.Options{CommonName: "Warden Test Intermediate CA", NotBefore: certsT0.AddDate(0, 1, 0), NotAfter: certsT0.AddDate(5, 0, 0), Serial: big.NewInt(1002)}
	certsLeafOpts  = certgen.Options{
		CommonName: "auth.warden.test", DNSNames: []string{"auth.warden.test", "localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: certsT0.AddDate(0, 2, 0), NotAfter: time.Now().AddDate(0, 0, 30).Truncate(time.Second), Serial: big.NewInt(1003),
	}
)

func certsNewChain(t testing.TB) *certgen.Chain {
	t.Helper()
	c, err := certgen.NewChain(certgen.ChainOptions{Root: certsRootOpts, Intermediate: certsInterOpts, Leaf: certsLeafOpts})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certsWriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// certsServeTLS serves cert on a loopback port. before, when set, runs on
// each raw connection first (a protocol preamble) and may refuse TLS.
func certsServeTLS(t testing.TB, cert tls.Certificate, before func(net.Conn) bool) string {
	t.Helper()
	return certsServeTLSConfig(t, &tls.Config{Certificates: []tls.Certificate{cert}}, before)
}

func certsServeTLSConfig(t testing.TB, cfg *tls.Config, before func(net.Conn) bool) string {
	t.Helper()
	return certsServeTLSWith(t, func() *tls.Config { return cfg }, before, nil)
}

// certsServeTLSWith serves TLS on a loopback port with the configuration
// config returns for each connection; before, when set, runs first (false
// ends the connection), after, when set, runs after a handshake that
// succeeded.
func certsServeTLSWith(t testing.TB, config func() *tls.Config, before func(net.Conn) bool, after func(*tls.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				if before != nil && !before(conn) {
					return
				}
				tc := tls.Server(conn, config())
				if tc.Handshake() == nil && after != nil {
					after(tc)
				}
			})
		}
	})
	return ln.Addr().String()
}

// certsHangingPeer accepts connections and never answers.
func certsHangingPeer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				<-done
				conn.Close()
			})
		}
	})
	return ln.Addr().String()
}

// certsScrape runs one collection and returns every sample keyed by
// name{label="value",...} with labels sorted, and the collector's error.
type certsSamples map[string]float64

func certsCollect(t testing.TB, ctx context.Context, c exportertest.Collector) (certsSamples, error) {
	t.Helper()
	ch := make(chan prometheus.Metric)
	var err error
	go func() {
		err = c.Collect(ctx, ch)
		close(ch)
	}()
	got := certsSamples{}
	for m := range ch {
		key := certsSeriesKey(t, m)
		if _, dup := got[key]; dup {
			t.Errorf("series %s sent twice", key)
		}
		got[key] = certsMetricValue(t, m)
	}
	return got, err
}

func certsSeriesKey(t testing.TB, m prometheus.Metric) string {
	t.Helper()
	pb := certsWriteMetric(t, m)
	desc := m.Desc().String()
	// fqName: "name", in the Desc's string form.
	name := desc[strings.Index(desc, `fqName: "`)+9:]
	name = name[:strings.Index(name, `"`)]
	var ls []string
	for _, l := range pb.GetLabel() {
		ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// get returns the value of the one series with the given name whose labels
// include all of kv ("label", "value", ...).
func (s certsSamples) get(t testing.TB, name string, kv ...string) float64 {
	t.Helper()
	found := s.matching(name, kv...)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s with %v, found %d: %v\nall: %v", name, kv, len(found), found, s.keys())
	}
	return s[found[0]]
}

// find is get for a series that may be absent.
func (s certsSamples) find(name string, kv ...string) (float64, bool) {
	found := s.matching(name, kv...)
	if len(found) != 1 {
		return 0, false
	}
	return s[found[0]], true
}

// matching returns the keys of the series of name with the labels kv.
func (s certsSamples) matching(name string, kv ...string) []string {
	var found []string
	for key := range s {
		if !strings.HasPrefix(key, name+"{") {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if !strings.Contains(key, fmt.Sprintf("%s=%q", kv[i], kv[i+1])) {
				match = false
			}
		}
		if match {
			found = append(found, key)
		}
	}
	return found
}

func (s certsSamples) count(name string) int {
	n := 0
	for key := range s {
		if strings.HasPrefix(key, name+"{") {
			n++
		}
	}
	return n
}

func (s certsSamples) keys() []string {
	ks := make([]string, 0, len(s))
	for k := range s {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func certsUnix(tm time.Time) float64 { return float64(tm.Truncate(time.Second).Unix()) }

func certsEndpoints(t testing.TB, cfg *EndpointsConfig) *EndpointsCollector {
	t.Helper()
	// What decoding a configuration file would default.
	if cfg.Timeout == 0 {
		cfg.Timeout = certsDefaultTimeout
	}
	c, err := NewEndpoints(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certsCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCertsEndpointReportsEveryCertificateOfTheChainWithItsPosition(t *testing.T) {
	chain := certsNewChain(t)
	addr := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate, chain.Root), nil)
	ca := certsWriteFile(t, t.TempDir(), "ca.pem", chain.Root.CertPEM())
	c := certsEndpoints(t, &EndpointsConfig{CAFile: ca, Targets: []Endpoint{{Address: addr, ServerName: "auth.warden.test", Name: "auth"}}})

	got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	for _, want := range []struct {
		position string
		cert     *certgen.Cert
	}{
		{"leaf", chain.Leaf},
		{"intermediate", chain.Intermediate},
		{"root", chain.Root},
	} {
		lbl := []string{"source_kind", "endpoint", "source", "auth", "position", want.position,
			"subject_CN", want.cert.Cert.Subject.CommonName, "issuer_CN", want.cert.Cert.Issuer.CommonName,
			"serial_number", want.cert.Cert.SerialNumber.String()}
		if v := got.get(t, "x509_cert_not_after", lbl...); v != certsUnix(want.cert.Cert.NotAfter) {
			t.Errorf("%s not_after = %v, want %v", want.position, v, certsUnix(want.cert.Cert.NotAfter))
		}
		if v := got.get(t, "x509_cert_not_before", lbl...); v != certsUnix(want.cert.Cert.NotBefore) {
			t.Errorf("%s not_before = %v, want %v", want.position, v, certsUnix(want.cert.Cert.NotBefore))
		}
	}
	// Dates come from the generator's options, not from the parsed certificates.
	if v := got.get(t, "x509_cert_not_after", "position", "intermediate"); v != certsUnix(certsInterOpts.NotAfter) {
		t.Errorf("intermediate not_after = %v, want %v", v, certsUnix(certsInterOpts.NotAfter))
	}
	if v := got.get(t, "warden_certs_chain_earliest_not_after", "source", "auth"); v != certsUnix(certsLeafOpts.NotAfter) {
		t.Errorf("earliest not_after = %v, want the leaf's %v", v, certsUnix(certsLeafOpts.NotAfter))
	}
	if v := got.get(t, "warden_certs_chain_verified", "source", "auth"); v != 1 {
		t.Errorf("chain_verified = %v, want 1", v)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "auth"); v != 1 {
		t.Errorf("source_success = %v, want 1", v)
	}
	if n := got.count("x509_cert_not_after"); n != 3 {
		t.Errorf("%d not_after series, want 3", n)
	}
	for _, reason := range []string{"dial", "timeout", "handshake", "ssl_not_supported", "protocol"} {
		if v := got.get(t, "warden_certs_errors_total", "reason", reason); v != 0 {
			t.Errorf("errors_total{reason=%q} = %v, want 0", reason, v)
		}
	}
}

func TestCertsEndpointChainVerification(t *testing.T) {
	chain := certsNewChain(t)
	dir := t.TempDir()
	ca := certsWriteFile(t, dir, "ca.pem", chain.Root.CertPEM())
	other, err := certgen.SelfSigned(certgen.Options{CommonName: "Other CA", IsCA: true, NotBefore: certsT0, NotAfter: certsT0.AddDate(10, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	otherCA := certsWriteFile(t, dir, "other.pem", other.CertPEM())
	expired, err := chain.Intermediate.Sign(certgen.Options{CommonName: "auth.warden.test", DNSNames: []string{"auth.warden.test"},
		NotBefore: certsT0.AddDate(0, 2, 0), NotAfter: certsT0.AddDate(0, 3, 0)})
	if err != nil {
		t.Fatal(err)
	}
	selfSigned, err := certgen.SelfSigned(certgen.Options{CommonName: "self.warden.test", DNSNames: []string{"self.warden.test"},
		NotBefore: certsT0, NotAfter: certsT0.AddDate(2, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	selfCA := certsWriteFile(t, dir, "self.pem", selfSigned.CertPEM())

	good := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	leafOnly := certsServeTLS(t, chain.Leaf.TLSCertificate(), nil)
	expiredAddr := certsServeTLS(t, expired.TLSCertificate(chain.Intermediate), nil)
	selfAddr := certsServeTLS(t, selfSigned.TLSCertificate(), nil)
	_, goodPort, _ := net.SplitHostPort(good)

	tests := []struct {
		name         string
		target       Endpoint
		caFile       string
		wantVerified float64
		wantCerts    int
		wantEarliest time.Time
	}{
		{"configured CA and matching name", Endpoint{Address: good, ServerName: "auth.warden.test"}, ca, 1, 2, certsLeafOpts.NotAfter},
		{"name taken from the address", Endpoint{Address: "localhost:" + goodPort}, ca, 1, 2, certsLeafOpts.NotAfter},
		{"IP address checked against IP SANs", Endpoint{Address: good}, ca, 1, 2, certsLeafOpts.NotAfter},
		{"unknown CA (system roots)", Endpoint{Address: good, ServerName: "auth.warden.test"}, "", 0, 2, certsLeafOpts.NotAfter},
		{"another CA", Endpoint{Address: good, ServerName: "auth.warden.test"}, otherCA, 0, 2, certsLeafOpts.NotAfter},
		{"wrong name", Endpoint{Address: good, ServerName: "db.warden.test"}, ca, 0, 2, certsLeafOpts.NotAfter},
		{"missing intermediate", Endpoint{Address: leafOnly, ServerName: "auth.warden.test"}, ca, 0, 1, certsLeafOpts.NotAfter},
		{"expired leaf is still read", Endpoint{Address: expiredAddr, ServerName: "auth.warden.test"}, ca, 0, 2, certsT0.AddDate(0, 3, 0)},
		{"self-signed without its own CA", Endpoint{Address: selfAddr, ServerName: "self.warden.test"}, "", 0, 1, certsT0.AddDate(2, 0, 0)},
		{"self-signed trusted as its own CA", Endpoint{Address: selfAddr, ServerName: "self.warden.test"}, selfCA, 1, 1, certsT0.AddDate(2, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.target.Name = "ep"
			c := certsEndpoints(t, &EndpointsConfig{CAFile: tt.caFile, Targets: []Endpoint{tt.target}})
			got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if v := got.get(t, "warden_certs_source_success", "source", "ep"); v != 1 {
				t.Fatalf("source_success = %v, want 1", v)
			}
			if v := got.get(t, "warden_certs_chain_verified", "source", "ep"); v != tt.wantVerified {
				t.Errorf("chain_verified = %v, want %v", v, tt.wantVerified)
			}
			if n := got.count("x509_cert_not_after"); n != tt.wantCerts {
				t.Errorf("%d certificates reported, want %d", n, tt.wantCerts)
			}
			if v := got.get(t, "x509_cert_not_after", "position", "leaf"); v != certsUnix(tt.wantEarliest) {
				t.Errorf("leaf not_after = %v, want %v", v, certsUnix(tt.wantEarliest))
			}
			if v := got.get(t, "warden_certs_chain_earliest_not_after"); v != certsUnix(tt.wantEarliest) {
				t.Errorf("earliest not_after = %v, want %v", v, certsUnix(tt.wantEarliest))
			}
		})
	}
}

func TestCertsEndpointChainIsReadWhenTheServerDemandsAClientCertificate(t *testing.T) {
	chain := certsNewChain(t)
	// TLS 1.2: the server sends its chain, asks for a client certificate
	// and aborts the handshake when none comes.
	addr := certsServeTLSConfig(t, &tls.Config{
		Certificates: []tls.Certificate{chain.Leaf.TLSCertificate(chain.Intermediate)},
		ClientAuth:   tls.RequireAnyClientCert,
		MaxVersion:   tls.VersionTLS12,
	}, nil)
	c := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{{Address: addr, Name: "mtls"}}})
	got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "mtls"); v != 1 {
		t.Errorf("source_success = %v, want 1", v)
	}
	if v := got.get(t, "x509_cert_not_after", "position", "leaf"); v != certsUnix(certsLeafOpts.NotAfter) {
		t.Errorf("leaf not_after = %v, want %v", v, certsUnix(certsLeafOpts.NotAfter))
	}
}

// The hanging peer never answers, so Collect returning at all shows that
// the scrape's deadline cut it off; how long that took depends on the
// machine and is not asserted.
func TestCertsEndpointHangingPeerIsCutOffAtTheDeadline(t *testing.T) {
	chain := certsNewChain(t)
	hanging := certsHangingPeer(t)
	good := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	c := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{{Address: hanging, Name: "hang"}, {Address: good, Name: "good"}}})

	got, err := certsCollect(t, certsCtx(t, time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "hang"); v != 0 {
		t.Errorf("hanging peer source_success = %v, want 0", v)
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "timeout"); v != 1 {
		t.Errorf("errors_total{reason=timeout} = %v, want 1", v)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "good"); v != 1 {
		t.Errorf("the other endpoint's source_success = %v, want 1", v)
	}

	// The counter is kept across scrapes.
	got, _ = certsCollect(t, certsCtx(t, 300*time.Millisecond), c)
	if v := got.get(t, "warden_certs_errors_total", "reason", "timeout"); v != 2 {
		t.Errorf("after a second scrape errors_total{reason=timeout} = %v, want 2", v)
	}
}

func TestCertsEndpointTimeoutKeepsAHangingPeerFromStarvingTheQueue(t *testing.T) {
	chain := certsNewChain(t)
	hanging := certsHangingPeer(t)
	good := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	c := certsEndpoints(t, &EndpointsConfig{Concurrency: 1, Timeout: 200 * time.Millisecond,
		Targets: []Endpoint{{Address: hanging, Name: "hang"}, {Address: good, Name: "good"}}})

	got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "hang"); v != 0 {
		t.Errorf("hanging peer source_success = %v, want 0", v)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "good"); v != 1 {
		t.Errorf("endpoint queued behind the hanging peer: source_success = %v, want 1", v)
	}
}

// TestCertsEndpointDefaultsReportEveryHealthyEndpointWhenATenthHang
// probes 1,000 endpoints, 100 of which accept and never answer, with the
// default settings: every healthy one must be read and every hanging one
// reported as a timeout (of its own probe: the scrape deadline is
// generous, so that a busy machine cannot fail the test; how long the
// scrape takes is BenchmarkCertsScrape1000Endpoints/hanging=100's ns/op).
// Endpoints are told apart by name, so they share a few listeners.
func TestCertsEndpointDefaultsReportEveryHealthyEndpointWhenATenthHang(t *testing.T) {
	const (
		endpoints = 1000
		hanging   = 100
		listeners = 4
	)
	chain := certsNewChain(t)
	cert := chain.Leaf.TLSCertificate(chain.Intermediate)
	var good, hang []string
	for range listeners {
		good = append(good, certsServeTLS(t, cert, nil))
		hang = append(hang, certsHangingPeer(t))
	}
	var yml strings.Builder
	yml.WriteString("certs:\n  endpoints:\n    targets:\n")
	for i := range endpoints {
		// The hanging ones first: they take slots before any healthy
		// endpoint does.
		addr := good[i%listeners]
		if i < hanging {
			addr = hang[i%listeners]
		}
		fmt.Fprintf(&yml, "      - {address: '%s', name: ep-%04d}\n", addr, i)
	}
	cfg, err := parseConfig(yml.String())
	if err != nil {
		t.Fatal(err)
	}
	c := certsEndpoints(t, cfg.Endpoints)

	start := time.Now()
	got, err := certsCollect(t, certsCtx(t, 2*time.Minute), c)
	t.Logf("scrape of %d endpoints, %d hanging, took %s (concurrency %d, timeout %s)", endpoints, hanging,
		time.Since(start).Round(time.Millisecond), c.concurrency, c.timeout)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	var failed []string
	for i := hanging; i < endpoints; i++ {
		name := fmt.Sprintf("ep-%04d", i)
		if got.get(t, "warden_certs_source_success", "source", name) != 1 {
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d healthy endpoints not read, e.g. %v; errors: timeout %v, skipped %v", len(failed), endpoints-hanging,
			failed[:min(5, len(failed))], got["warden_certs_errors_total{reason=\"timeout\",source_kind=\"endpoint\"}"],
			got["warden_certs_errors_total{reason=\"skipped\",source_kind=\"endpoint\"}"])
	}
	if n := got.count("x509_cert_not_after"); n != 2*(endpoints-hanging) {
		t.Errorf("%d x509_cert_not_after series, want 2 for each of the %d healthy endpoints", n, endpoints-hanging)
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "timeout"); v != hanging {
		t.Errorf("errors_total{reason=timeout} = %v, want %d (the hanging endpoints)", v, hanging)
	}
}

func TestCertsEndpointNeverProbedBeforeTheDeadlineIsSkippedNotTimeout(t *testing.T) {
	chain := certsNewChain(t)
	hanging := certsHangingPeer(t)
	good := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	c := certsEndpoints(t, &EndpointsConfig{Concurrency: 1, Timeout: time.Minute,
		Targets: []Endpoint{{Address: hanging, Name: "hang"}, {Address: good, Name: "good-1"}, {Address: good, Name: "good-2"}}})

	got, err := certsCollect(t, certsCtx(t, 500*time.Millisecond), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	for _, name := range []string{"hang", "good-1", "good-2"} {
		if v := got.get(t, "warden_certs_source_success", "source", name); v != 0 {
			t.Errorf("%s: source_success = %v, want 0", name, v)
		}
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "timeout"); v != 1 {
		t.Errorf("errors_total{reason=timeout} = %v, want 1 (the probe cut off)", v)
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "skipped"); v != 2 {
		t.Errorf("errors_total{reason=skipped} = %v, want 2 (never probed)", v)
	}
}

func TestCertsAutoConcurrency(t *testing.T) {
	for _, tc := range []struct{ endpoints, want int }{
		{1, 1}, {10, 10}, {64, 64}, {100, 64}, {500, 125}, {1000, 250}, {1001, 251}, {5000, 256},
	} {
		if got := certsAutoConcurrency(tc.endpoints); got != tc.want {
			t.Errorf("certsAutoConcurrency(%d) = %d, want %d", tc.endpoints, got, tc.want)
		}
	}
}

func TestCertsEndpointFailureReasons(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	// A plain TCP service that answers with something that is not TLS.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close() })
	go func() {
		for {
			conn, err := plain.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\n\r\n")
			conn.Close()
		}
	}()

	tests := []struct {
		name   string
		target Endpoint
		reason string
	}{
		{"connection refused", Endpoint{Address: refused}, "dial"},
		{"not a TLS server", Endpoint{Address: plain.Addr().String()}, "handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{tt.target}})
			got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if v := got.get(t, "warden_certs_source_success"); v != 0 {
				t.Errorf("source_success = %v, want 0", v)
			}
			if v := got.get(t, "warden_certs_errors_total", "reason", tt.reason); v != 1 {
				t.Errorf("errors_total{reason=%q} = %v, want 1; all: %v", tt.reason, v, got.keys())
			}
			if n := got.count("x509_cert_not_after"); n != 0 {
				t.Errorf("%d certificates reported for a failed endpoint", n)
			}
		})
	}
}

// certsFakePostgres answers PostgreSQL's SSLRequest with answer and, for
// 'S', continues with a TLS handshake.
func certsFakePostgres(t *testing.T, cert tls.Certificate, answer byte) string {
	return certsServeTLS(t, cert, func(conn net.Conn) bool {
		var req [8]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			t.Errorf("fake postgres: read SSLRequest: %v", err)
			return false
		}
		if !bytes.Equal(req[:], []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}) {
			t.Errorf("fake postgres: got %x, want the SSLRequest (length 8, code 80877103)", req)
			return false
		}
		if _, err := conn.Write([]byte{answer}); err != nil {
			return false
		}
		return answer == 'S'
	})
}

func TestCertsEndpointPostgresSSLRequestAgainstAFakeServer(t *testing.T) {
	chain := certsNewChain(t)
	ca := certsWriteFile(t, t.TempDir(), "ca.pem", chain.Root.CertPEM())
	tests := []struct {
		answer      byte
		wantSuccess float64
		wantReason  string
	}{
		{'S', 1, ""},
		{'N', 0, "ssl_not_supported"},
		{'E', 0, "protocol"},
	}
	for _, tt := range tests {
		t.Run(string(tt.answer), func(t *testing.T) {
			addr := certsFakePostgres(t, chain.Leaf.TLSCertificate(chain.Intermediate), tt.answer)
			c := certsEndpoints(t, &EndpointsConfig{CAFile: ca, Targets: []Endpoint{{Address: addr, Protocol: "postgres", Name: "pg"}}})
			got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if v := got.get(t, "warden_certs_source_success", "source", "pg"); v != tt.wantSuccess {
				t.Errorf("source_success = %v, want %v", v, tt.wantSuccess)
			}
			if tt.wantReason != "" {
				if v := got.get(t, "warden_certs_errors_total", "reason", tt.wantReason); v != 1 {
					t.Errorf("errors_total{reason=%q} = %v, want 1", tt.wantReason, v)
				}
				return
			}
			if v := got.get(t, "x509_cert_not_after", "position", "leaf"); v != certsUnix(certsLeafOpts.NotAfter) {
				t.Errorf("leaf not_after = %v, want %v", v, certsUnix(certsLeafOpts.NotAfter))
			}
			if v := got.get(t, "x509_cert_not_before", "position", "intermediate"); v != certsUnix(certsInterOpts.NotBefore) {
				t.Errorf("intermediate not_before = %v, want %v", v, certsUnix(certsInterOpts.NotBefore))
			}
			if v := got.get(t, "warden_certs_chain_verified"); v != 1 {
				t.Errorf("chain_verified = %v, want 1", v)
			}
		})
	}
}

func TestCertsEndpointPostgresSSLRequestAgainstARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own server; skipped with -short")
	}
	chain := certsNewChain(t)
	ca := certsWriteFile(t, t.TempDir(), "ca.pem", chain.Root.CertPEM())
	pg := testenv.StartPostgres(t, testenv.WithPostgresTLS(certgen.ChainPEM(chain.Leaf, chain.Intermediate), chain.Leaf.KeyPEM()))

	c := certsEndpoints(t, &EndpointsConfig{CAFile: ca, Targets: []Endpoint{
		{Address: pg.Addr(), Protocol: "postgres", Name: "pg-ssl"},
		// The package's shared server runs with ssl = off.
		{Address: sharedPG.Get(t).Addr(), Protocol: "postgres", Name: "pg-plain"},
	}})
	got, err := certsCollect(t, certsCtx(t, 10*time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "pg-ssl"); v != 1 {
		t.Fatalf("source_success{source=pg-ssl} = %v, want 1; all: %v", v, got.keys())
	}
	for _, want := range []struct {
		position string
		cert     *certgen.Cert
	}{{"leaf", chain.Leaf}, {"intermediate", chain.Intermediate}} {
		if v := got.get(t, "x509_cert_not_after", "source", "pg-ssl", "position", want.position,
			"subject_CN", want.cert.Cert.Subject.CommonName, "serial_number", want.cert.Cert.SerialNumber.String()); v != certsUnix(want.cert.Cert.NotAfter) {
			t.Errorf("%s not_after = %v, want %v", want.position, v, certsUnix(want.cert.Cert.NotAfter))
		}
	}
	if v := got.get(t, "warden_certs_chain_verified", "source", "pg-ssl"); v != 1 {
		t.Errorf("chain_verified = %v, want 1", v)
	}
	if v := got.get(t, "warden_certs_source_success", "source", "pg-plain"); v != 0 {
		t.Errorf("source_success{source=pg-plain} = %v, want 0", v)
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "ssl_not_supported"); v != 1 {
		t.Errorf("errors_total{reason=ssl_not_supported} = %v, want 1", v)
	}
}

func TestCertsFilesReportsBundlesAndUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	chain := certsNewChain(t)
	// A full chain with the leaf's key in the middle, as some tools write it.
	bundle := certsWriteFile(t, dir, "fullchain.pem", slices.Concat(
		chain.Leaf.CertPEM(), chain.Leaf.KeyPEM(), chain.Intermediate.CertPEM(), []byte("# comment between blocks\n"), chain.Root.CertPEM()))
	caBundle := certsWriteFile(t, dir, "ca-bundle.pem", certgen.ChainPEM(chain.Root, chain.Intermediate))
	der := certsWriteFile(t, dir, "leaf.der", chain.Leaf.Cert.Raw)
	garbage := certsWriteFile(t, dir, "garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"))
	keyOnly := certsWriteFile(t, dir, "key.pem", chain.Leaf.KeyPEM())
	missing := filepath.Join(dir, "missing.pem")
	noMatch := filepath.Join(dir, "nothing-*.crt")
	if err := os.Mkdir(filepath.Join(dir, "sub.pem"), 0o700); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := NewFiles(&FilesConfig{Paths: []string{filepath.Join(dir, "*.pem"), bundle, der, missing, noMatch}}, logger)
	got, err := certsCollect(t, certsCtx(t, 5*time.Second), c)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}

	for _, want := range []struct {
		source, position string
		cert             *certgen.Cert
	}{
		{bundle, "leaf", chain.Leaf},
		{bundle, "intermediate", chain.Intermediate},
		{bundle, "root", chain.Root},
		{caBundle, "root", chain.Root},
		{caBundle, "intermediate", chain.Intermediate},
		{der, "leaf", chain.Leaf},
	} {
		lbl := []string{"source_kind", "file", "source", want.source, "position", want.position,
			"subject_CN", want.cert.Cert.Subject.CommonName, "serial_number", want.cert.Cert.SerialNumber.String()}
		if v := got.get(t, "x509_cert_not_after", lbl...); v != certsUnix(want.cert.Cert.NotAfter) {
			t.Errorf("%s %s not_after = %v, want %v", want.source, want.position, v, certsUnix(want.cert.Cert.NotAfter))
		}
		if v := got.get(t, "x509_cert_not_before", lbl...); v != certsUnix(want.cert.Cert.NotBefore) {
			t.Errorf("%s %s not_before = %v, want %v", want.source, want.position, v, certsUnix(want.cert.Cert.NotBefore))
		}
	}
	if n := got.count("x509_cert_not_after"); n != 6 {
		t.Errorf("%d not_after series, want 6: %v", n, got.keys())
	}
	if v := got.get(t, "warden_certs_chain_earliest_not_after", "source", caBundle); v != certsUnix(certsInterOpts.NotAfter) {
		t.Errorf("CA bundle earliest not_after = %v, want %v", v, certsUnix(certsInterOpts.NotAfter))
	}
	for source, want := range map[string]float64{bundle: 1, caBundle: 1, der: 1, garbage: 0, keyOnly: 0, missing: 0, noMatch: 0} {
		if v := got.get(t, "warden_certs_source_success", "source", source); v != want {
			t.Errorf("source_success{source=%s} = %v, want %v", source, v, want)
		}
	}
	if n := got.count("warden_certs_source_success"); n != 7 {
		t.Errorf("%d sources, want 7 (directories skipped, duplicates once): %v", n, got.keys())
	}
	for reason, want := range map[string]float64{"parse": 2, "not_found": 2, "read": 0} {
		if v := got.get(t, "warden_certs_errors_total", "reason", reason); v != want {
			t.Errorf("errors_total{reason=%q} = %v, want %v", reason, v, want)
		}
	}
	if got.count("warden_certs_chain_verified") != 0 {
		t.Error("files report chain_verified; only endpoints verify")
	}
	if !strings.Contains(logs.String(), "garbage.pem") {
		t.Errorf("the failure is not logged at debug level: %s", logs.String())
	}
	keyBody := strings.Split(string(chain.Leaf.KeyPEM()), "\n")[1]
	if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), keyBody[:20]) {
		t.Errorf("key material in the logs: %s", logs.String())
	}
}

func TestCertsFileThatDisappearsIsReportedNotFatal(t *testing.T) {
	dir := t.TempDir()
	chain := certsNewChain(t)
	path := certsWriteFile(t, dir, "tls.crt", chain.Leaf.CertPEM())
	c := NewFiles(&FilesConfig{Paths: []string{path}}, slog.New(slog.DiscardHandler))
	got, err := certsCollect(t, t.Context(), c)
	if err != nil || got.get(t, "warden_certs_source_success", "source", path) != 1 {
		t.Fatalf("first scrape: err %v, samples %v", err, got.keys())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	got, err = certsCollect(t, t.Context(), c)
	if err != nil {
		t.Fatalf("Collect after removal: %v", err)
	}
	if v := got.get(t, "warden_certs_source_success", "source", path); v != 0 {
		t.Errorf("source_success after removal = %v, want 0", v)
	}
	if v := got.get(t, "warden_certs_errors_total", "reason", "not_found"); v != 1 {
		t.Errorf("errors_total{reason=not_found} = %v, want 1", v)
	}
	if n := got.count("x509_cert_not_after"); n != 0 {
		t.Errorf("a removed file still reports %d certificates", n)
	}
}

func TestCertsPositions(t *testing.T) {
	chain := certsNewChain(t)
	selfLeaf, err := certgen.SelfSigned(certgen.Options{CommonName: "self", NotBefore: certsT0, NotAfter: certsT0.AddDate(1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	// Same subject and issuer name as the root, signed by another key: a
	// cross-signed certificate is not a root.
	impostor, err := chain.Intermediate.Sign(certgen.Options{CommonName: "Warden Test Intermediate CA", IsCA: true, NotBefore: certsT0, NotAfter: certsT0.AddDate(1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		certs       []*certgen.Cert
		firstIsLeaf bool
		want        []string
	}{
		{"presented chain", []*certgen.Cert{chain.Leaf, chain.Intermediate, chain.Root}, true, []string{"leaf", "intermediate", "root"}},
		{"self-signed leaf presented", []*certgen.Cert{selfLeaf}, true, []string{"leaf"}},
		{"self-signed leaf in a file", []*certgen.Cert{selfLeaf}, false, []string{"leaf"}},
		{"CA bundle file", []*certgen.Cert{chain.Root, chain.Intermediate}, false, []string{"root", "intermediate"}},
		{"intermediate alone in a file", []*certgen.Cert{chain.Intermediate}, false, []string{"intermediate"}},
		{"same name, other key", []*certgen.Cert{chain.Leaf, impostor}, true, []string{"leaf", "intermediate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var xs []*x509.Certificate
			for _, c := range tt.certs {
				xs = append(xs, c.Cert)
			}
			if got := certsPositions(xs, tt.firstIsLeaf); !slices.Equal(got, tt.want) {
				t.Errorf("positions = %v, want %v", got, tt.want)
			}
		})
	}
}

// parseConfig decodes a configuration file's certs section and validates
// it as the exporter does.
func parseConfig(yml string) (*Config, error) {
	var file struct {
		Certs *Config `yaml:"certs"`
	}
	if err := exportertest.DecodeStrict(yml, &file); err != nil {
		return nil, err
	}
	if err := file.Certs.Validate("certs"); err != nil {
		return nil, err
	}
	return file.Certs, nil
}

func TestCertsConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			yaml: "certs:\n  endpoints:\n    targets:\n      - address: db:5432\n        protocol: postgres\n      - address: auth:443\n",
			check: func(t *testing.T, c *Config) {
				if c.Endpoints.Concurrency != 0 || c.Endpoints.Timeout != 2*time.Second {
					t.Errorf("concurrency = %d, timeout = %s; want 0 (sized from the targets) and 2s", c.Endpoints.Concurrency, c.Endpoints.Timeout)
				}
				if p := c.Endpoints.Targets[1].Protocol; p != "tls" {
					t.Errorf("protocol = %q, want tls", p)
				}
			},
		},
		{
			name: "every source",
			yaml: "certs:\n  endpoints:\n    concurrency: 4\n    timeout: 3s\n    targets: [{address: 'auth:443', server_name: auth.example.com, name: auth}]\n" +
				"  files:\n    paths: ['/etc/ssl/private/*.pem']\n  kubernetes:\n    namespaces: [rust-security]\n    label_selector: 'app in (auth, policy)'\n",
			check: func(t *testing.T, c *Config) {
				if c.Endpoints.Timeout != 3*time.Second || c.Kubernetes.Namespaces[0] != "rust-security" || c.Files.Paths[0] != "/etc/ssl/private/*.pem" {
					t.Errorf("decoded %+v", c)
				}
			},
		},
		{name: "empty", yaml: "certs: {}\n", wantErr: "certs: configure at least one of endpoints, files, kubernetes"},
		{name: "unknown field", yaml: "certs:\n  endpoints:\n    targets: [{adress: 'a:1'}]\n", wantErr: "field adress not found"},
		{name: "no targets", yaml: "certs:\n  endpoints: {concurrency: 2}\n", wantErr: "certs.endpoints.targets: at least one target is required"},
		{name: "no port", yaml: "certs:\n  endpoints:\n    targets: [{address: auth}]\n", wantErr: "certs.endpoints.targets[0].address: \"auth\" is not host:port"},
		{name: "empty host", yaml: "certs:\n  endpoints:\n    targets: [{address: ':443'}]\n", wantErr: "certs.endpoints.targets[0].address: \":443\" needs both a host and a port"},
		{name: "bad protocol", yaml: "certs:\n  endpoints:\n    targets: [{address: 'a:1', protocol: smtp}]\n", wantErr: "certs.endpoints.targets[0].protocol: \"smtp\" is not one of tls, postgres"},
		{name: "concurrency", yaml: "certs:\n  endpoints:\n    concurrency: 5000\n    targets: [{address: 'a:1'}]\n", wantErr: "certs.endpoints.concurrency: must be between 1 and 1024, or 0"},
		{name: "negative concurrency", yaml: "certs:\n  endpoints:\n    concurrency: -1\n    targets: [{address: 'a:1'}]\n", wantErr: "certs.endpoints.concurrency: must be between 1 and 1024, or 0"},
		{name: "negative timeout", yaml: "certs:\n  endpoints:\n    timeout: -1s\n    targets: [{address: 'a:1'}]\n", wantErr: "certs.endpoints.timeout: must not be negative"},
		{name: "duplicate source", yaml: "certs:\n  endpoints:\n    targets: [{address: 'a:1'}, {address: 'a:1', server_name: b}]\n", wantErr: "certs.endpoints.targets[1]: source \"a:1\" is already used by certs.endpoints.targets[0] (set name to tell them apart)"},
		{name: "no paths", yaml: "certs:\n  files: {paths: []}\n", wantErr: "certs.files.paths: at least one path is required"},
		{name: "bad glob", yaml: "certs:\n  files: {paths: ['/etc/[x']}\n", wantErr: "certs.files.paths[0]: \"/etc/[x\": syntax error in pattern"},
		{name: "bad namespace", yaml: "certs:\n  kubernetes: {namespaces: [Bad_NS]}\n", wantErr: "certs.kubernetes.namespaces[0]: \"Bad_NS\" is not a namespace name"},
		{name: "duplicate namespace", yaml: "certs:\n  kubernetes: {namespaces: [a, a]}\n", wantErr: "certs.kubernetes.namespaces[1]: \"a\" is listed twice"},
		{name: "bad selector", yaml: "certs:\n  kubernetes: {label_selector: 'app in ('}\n", wantErr: "certs.kubernetes.label_selector: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.yaml)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestCertsEndpointsFailLoudlyOnUnreadableCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := certsWriteFile(t, dir, "ca.pem", []byte("not a certificate"))
	tests := []struct {
		name, caFile, wantErr string
	}{
		{"missing", filepath.Join(dir, "missing.pem"), "certs.endpoints.ca_file: open "},
		{"not PEM", notPEM, "certs.endpoints.ca_file: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEndpoints(&EndpointsConfig{Concurrency: 1, CAFile: tt.caFile, Targets: []Endpoint{{Address: "a:1"}}}, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestCertsMetricsPassPromtool runs promtool's linter over a scrape of the
// endpoint and file collectors, failures included.
func TestCertsMetricsPassPromtool(t *testing.T) {
	testenv.Promtool(t)
	dir := t.TempDir()
	chain := certsNewChain(t)
	bundle := certsWriteFile(t, dir, "fullchain.pem", certgen.ChainPEM(chain.Leaf, chain.Intermediate, chain.Root))
	certsWriteFile(t, dir, "garbage.pem", []byte("garbage"))
	good := certsServeTLS(t, chain.Leaf.TLSCertificate(chain.Intermediate), nil)
	endpoints := &exportertest.Adapter{C: certsEndpoints(t, &EndpointsConfig{Targets: []Endpoint{{Address: good}, {Address: certsHangingPeer(t)}}}), Timeout: time.Second}
	files := &exportertest.Adapter{C: NewFiles(&FilesConfig{Paths: []string{filepath.Join(dir, "*.pem"), bundle, filepath.Join(dir, "missing.pem")}}, slog.New(slog.DiscardHandler)), Timeout: time.Second}
	reg := prometheus.NewRegistry()
	reg.MustRegister(endpoints, files)
	text := testenv.Exposition(t, reg)
	for _, want := range []string{"x509_cert_not_after{", "warden_certs_chain_verified{", "warden_certs_errors_total{"} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s:\n%s", want, text)
		}
	}
	// Failed sources are metrics, not collector failures.
	if err := endpoints.LastErr(); err != nil {
		t.Errorf("endpoints collector failed: %v", err)
	}
	if err := files.LastErr(); err != nil {
		t.Errorf("files collector failed: %v", err)
	}
	testenv.CheckMetrics(t, "certs", text)
}

func certsWriteMetric(t testing.TB, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatalf("write metric %s: %v", m.Desc(), err)
	}
	return &pb
}

func certsMetricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	pb := certsWriteMetric(t, m)
	switch {
	case pb.Gauge != nil:
		return pb.GetGauge().GetValue()
	case pb.Counter != nil:
		return pb.GetCounter().GetValue()
	}
	t.Fatalf("metric %s is neither a gauge nor a counter", m.Desc())
	return 0
}

// FuzzCertsParsePEM feeds arbitrary file contents (PEM, DER, garbage) to the
// parser shared by files and Secrets: it must never panic, and whatever it
// returns must be certificates it could parse.
func FuzzCertsParsePEM(f *testing.F) {
	chain := certsNewChain(f)
	f.Add(certgen.ChainPEM(chain.Leaf, chain.Intermediate, chain.Root))
	f.Add(slices.Concat(chain.Leaf.CertPEM(), chain.Leaf.KeyPEM()))
	f.Add(chain.Leaf.Cert.Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := certsParsePEM(data)
		for _, c := range certs {
			if c == nil {
				t.Fatal("nil certificate returned")
			}
		}
		if err == nil && len(certs) == 0 {
			t.Fatal("no certificate and no error")
		}
		if err != nil && certsReason(err, "") != certsReasonParse {
			t.Fatalf("error %v has reason %q, want parse", err, certsReason(err, ""))
		}
	})
}
