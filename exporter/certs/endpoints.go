package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// postgresSSLRequest is PostgreSQL's SSLRequest message: length 8, then the
// request code 80877103 (1234 << 16 | 5679), both big-endian.
var postgresSSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// EndpointsCollector reads the certificate chain that TLS endpoints
// present, without requiring it to verify, and verifies it separately.
type EndpointsCollector struct {
	logger      *slog.Logger
	targets     []*certsEndpointTarget
	concurrency int
	timeout     time.Duration
	errors      *certsErrorCounter
	// roots are the distinct CA files, re-read when they change.
	roots    []*certsRoots
	verified *certsVerifyCache
	// secrets, once linked (CompareWithSecrets), holds the Secrets the
	// served certificates are compared with.
	secrets atomic.Pointer[KubernetesCollector]
}

type certsEndpointTarget struct {
	Endpoint
	source string
	// verifyName is what the leaf must be valid for.
	verifyName string
	// roots verify the chain; nil means the system roots.
	roots *certsRoots
	// tlsConfig is built once; each probe clones it to capture its own
	// chain. Its session cache lets later probes resume the session.
	tlsConfig *tls.Config
	sessions  *certsSessionCache
}

type certsProbeResult struct {
	certs    []*x509.Certificate
	verified bool
	err      error
}

// NewEndpoints builds the endpoints collector for a validated
// configuration. It fails when a CA file cannot be read.
func NewEndpoints(cfg *EndpointsConfig, logger *slog.Logger) (*EndpointsCollector, error) {
	c := &EndpointsCollector{
		logger:      logger.With("source_kind", certsKindEndpoint),
		concurrency: cfg.Concurrency,
		timeout:     cfg.Timeout,
		errors: newCertsErrorCounter(certsKindEndpoint, certsReasonDial, certsReasonTimeout, certsReasonHandshake,
			certsReasonSSLNotSupported, certsReasonProtocol, certsReasonSkipped),
		verified: newCertsVerifyCache(),
	}
	if c.concurrency == 0 {
		c.concurrency = certsAutoConcurrency(len(cfg.Targets))
	}
	roots := map[string]*certsRoots{}
	loadRoots := func(path, field string) (*certsRoots, error) {
		if path == "" {
			return nil, nil
		}
		if r, ok := roots[path]; ok {
			return r, nil
		}
		r := &certsRoots{path: path}
		if err := r.refresh(); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		roots[path] = r
		c.roots = append(c.roots, r)
		return r, nil
	}
	defaultRoots, err := loadRoots(cfg.CAFile, "certs.endpoints.ca_file")
	if err != nil {
		return nil, err
	}
	for i, t := range cfg.Targets {
		host, _, err := net.SplitHostPort(t.Address)
		if err != nil {
			return nil, fmt.Errorf("certs.endpoints.targets[%d].address: %w", i, err)
		}
		target := &certsEndpointTarget{Endpoint: t, source: t.source(), roots: defaultRoots, sessions: &certsSessionCache{every: certsFullHandshakeEvery}}
		if t.CAFile != "" {
			if target.roots, err = loadRoots(t.CAFile, fmt.Sprintf("certs.endpoints.targets[%d].ca_file", i)); err != nil {
				return nil, err
			}
		}
		target.verifyName = host
		if t.ServerName != "" {
			target.verifyName = t.ServerName
		}
		sni := ""
		if net.ParseIP(target.verifyName) == nil {
			sni = target.verifyName
		}
		target.tlsConfig = &tls.Config{
			ServerName: sni,
			// Read the chain whatever it is; verification is reported on its own.
			InsecureSkipVerify: true,
			// Old servers still hold certificates that expire.
			MinVersion: tls.VersionTLS10,
			// Nothing secret crosses this connection: classical key exchange
			// halves the handshake's cost against post-quantum hybrids.
			CurvePreferences:   []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521},
			ClientSessionCache: target.sessions,
		}
		c.targets = append(c.targets, target)
	}
	return c, nil
}

// certsAutoConcurrency is the default concurrency for n endpoints: a
// quarter of them, at least 64 and at most 256 (never more than n). A
// hanging endpoint holds one slot for the probe timeout; with this many
// slots, up to a quarter of the endpoints hanging at once cost the scrape
// one timeout in all, while the healthy ones go through the other slots.
// The slots cost nothing while idle; in use each is a socket and a
// goroutine.
func certsAutoConcurrency(n int) int {
	return min(n, max(certsMinAutoConcurrency, min(certsMaxAutoConcurrency, (n+3)/4)))
}

// CompareWithSecrets links the collector to the Secrets collector k: from
// then on each scrape reports warden_certs_served_stale for the endpoints
// whose certificate's subject a Secret has (see stale.go). Linking again
// replaces the link; nil removes it.
func (c *EndpointsCollector) CompareWithSecrets(k *KubernetesCollector) { c.secrets.Store(k) }

// Name is "certs/endpoints".
func (c *EndpointsCollector) Name() string { return "certs/endpoints" }

// Collect probes every endpoint, at most concurrency at a time, each for at
// most the probe timeout. Probes also end with ctx, which the exporter ends
// a little before the scrape deadline: an endpoint whose probe was cut off
// is reported as a timeout, one whose turn never came as skipped. A failing
// endpoint is reported through its own metrics; it does not fail the
// collector.
func (c *EndpointsCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	// A CA file that changed (a rotated root) is read again; its new
	// contents key the verification cache, so nothing verified against
	// the old roots is reused.
	for _, r := range c.roots {
		if err := r.refresh(); err != nil {
			c.logger.Warn("CA file unreadable, verifying against its previous contents", "path", r.path, "err", err)
		}
	}
	scrape := c.verified.begin()
	defer c.verified.end(scrape)
	results := make([]certsProbeResult, len(c.targets))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(c.concurrency, len(c.targets)) {
		wg.Go(func() {
			for i := range jobs {
				// The deadline, not only ctx.Err: a probe cut off by its
				// connection's deadline (set from ctx's) may return just
				// before ctx's own timer fires.
				if dl, ok := ctx.Deadline(); ctx.Err() != nil || (ok && !time.Now().Before(dl)) {
					results[i] = certsProbeResult{err: certsErr(certsReasonSkipped, "not probed before the scrape deadline")}
					continue
				}
				results[i] = c.probe(ctx, c.targets[i], scrape)
			}
		})
	}
	for i := range c.targets {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	skipped := 0
	for i, r := range results {
		t := c.targets[i]
		certsSourceSuccess(ch, certsKindEndpoint, t.source, r.err == nil)
		if r.err != nil {
			reason := certsReason(r.err, certsReasonHandshake)
			c.errors.inc(reason)
			if reason == certsReasonSkipped {
				skipped++
			}
			c.logger.Debug("reading endpoint certificates failed", "source", t.source, "address", t.Address, "reason", reason, "err", r.err)
			continue
		}
		certsCollectChain(ch, certsKindEndpoint, t.source, r.certs, true)
		verified := 0.0
		if r.verified {
			verified = 1
		}
		ch <- prometheus.MustNewConstMetric(certsChainVerifiedDesc, prometheus.GaugeValue, verified, certsKindEndpoint, t.source)
	}
	if k := c.secrets.Load(); k != nil {
		certsCollectServedStale(ch, k, c.targets, results)
	}
	if skipped > 0 {
		c.logger.Warn("endpoints not probed before the scrape deadline: raise concurrency or lower timeout", "skipped", skipped,
			"endpoints", len(c.targets), "concurrency", c.concurrency, "timeout", c.timeout)
	}
	c.errors.collect(ch)
	return nil
}

// probe connects to one endpoint and reads the chain it presents. The
// handshake does not verify the chain (so expired or privately issued
// certificates are still read); the chain is verified afterwards against
// the endpoint's roots and server name, or the verdict is taken from the
// cache when the same chain was verified before.
func (c *EndpointsCollector) probe(ctx context.Context, t *certsEndpointTarget, scrape uint64) certsProbeResult {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return certsProbeResult{err: certsNetErr(ctx, certsReasonDial, fmt.Errorf("dial %s: %w", t.Address, err))}
	}
	defer conn.Close()
	// The deadline bounds every read and write below, also for a peer that
	// accepts the connection and then never answers.
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return certsProbeResult{err: certsErr(certsReasonDial, "set deadline: %w", err)}
		}
	}
	if t.Protocol == certsProtocolPostgres {
		if err := certsPostgresStartTLS(ctx, conn); err != nil {
			return certsProbeResult{err: err}
		}
	}

	var certs []*x509.Certificate
	cfg := t.tlsConfig.Clone()
	// Capture the chain as soon as the server sends it (or, resuming, as
	// the session remembers it), so that a handshake that fails later (a
	// server that insists on a client certificate) still yields it.
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		certs = cs.PeerCertificates
		return nil
	}
	// A TLS 1.3 server sends its session ticket after the handshake; the
	// wait for it below ends as soon as it is stored.
	watch := &certsTicketWatch{certsSessionCache: t.sessions, conn: conn}
	cfg.ClientSessionCache = watch
	tc := tls.Client(conn, cfg)
	herr := tc.HandshakeContext(ctx)
	if len(certs) == 0 {
		if herr == nil {
			herr = errors.New("the server presented no certificate")
		}
		return certsProbeResult{err: certsNetErr(ctx, certsReasonHandshake, fmt.Errorf("TLS handshake with %s: %w", t.Address, herr))}
	}
	if herr != nil {
		c.logger.Debug("TLS handshake failed after the server presented its certificates", "source", t.source, "err", herr)
	} else {
		state := tc.ConnectionState()
		if !state.DidResume {
			t.sessions.fullHandshake(time.Now())
			if now := time.Now(); state.Version >= tls.VersionTLS13 && t.sessions.expectTicket(now) {
				certsAwaitTicket(ctx, tc, conn, watch)
				if !watch.stored {
					t.sessions.noTicket(now)
				}
			}
		}
	}

	var rootsSum [32]byte
	var pool *x509.CertPool
	if t.roots != nil {
		pool, rootsSum = t.roots.current()
	}
	key := certsVerifyKey{chain: certsChainSum(certs), roots: rootsSum, name: t.verifyName}
	if verified, ok := c.verified.get(key, scrape); ok {
		return certsProbeResult{certs: certs, verified: verified}
	}
	intermediates := x509.NewCertPool()
	for _, cert := range certs[1:] {
		intermediates.AddCert(cert)
	}
	now := time.Now()
	chains, verr := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: intermediates,
		DNSName:       t.verifyName,
		CurrentTime:   now,
	})
	if verr != nil {
		c.logger.Debug("certificate chain does not verify", "source", t.source, "err", verr)
	}
	c.verified.put(key, verr == nil, certsVerdictUntil(now, certs, chains), scrape)
	return certsProbeResult{certs: certs, verified: verr == nil}
}

// certsTicketWait bounds the wait for a TLS 1.3 session ticket after a full
// handshake. Servers send it with their first flight (Go) or right after
// the client's Finished (OpenSSL): one round trip at most.
const certsTicketWait = 100 * time.Millisecond

// certsAwaitTicket reads from a freshly handshaken TLS 1.3 connection until
// the server's session ticket has been stored (the watch then ends the
// read), for certsTicketWait at most. The probe sends no request, so no
// application data comes: only post-handshake messages are processed.
func certsAwaitTicket(ctx context.Context, tc *tls.Conn, conn net.Conn, watch *certsTicketWatch) {
	dl := time.Now().Add(certsTicketWait)
	if ctxDl, ok := ctx.Deadline(); ok && ctxDl.Before(dl) {
		dl = ctxDl
	}
	if err := conn.SetReadDeadline(dl); err != nil {
		return
	}
	watch.armed = true
	var b [1]byte
	_, _ = tc.Read(b[:])
}

// certsPostgresStartTLS asks a PostgreSQL server to switch to TLS: it
// answers 'S' and the TLS handshake follows, or 'N' when ssl is off.
func certsPostgresStartTLS(ctx context.Context, conn net.Conn) error {
	if _, err := conn.Write(postgresSSLRequest); err != nil {
		return certsNetErr(ctx, certsReasonHandshake, fmt.Errorf("send SSLRequest: %w", err))
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return certsNetErr(ctx, certsReasonHandshake, fmt.Errorf("read SSLRequest answer: %w", err))
	}
	switch answer[0] {
	case 'S':
		return nil
	case 'N':
		return certsErr(certsReasonSSLNotSupported, "the PostgreSQL server does not accept TLS (ssl = off)")
	default:
		return certsErr(certsReasonProtocol, "unexpected answer %q to SSLRequest: not a PostgreSQL server?", answer[0])
	}
}

// certsNetErr classifies a network error as a timeout (the deadline or the
// scrape's end) or as the given reason.
func certsNetErr(ctx context.Context, reason string, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		reason = certsReasonTimeout
	}
	return &certsError{reason: reason, err: err}
}
