package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// What the endpoints collector keeps between scrapes, so that a scrape
// repeats only the work whose result may have changed: the TLS session of
// each endpoint (resumption skips the server's certificate signature and
// the parsing of its chain), and the verdict of each chain's verification
// (the same chain, roots and name verify the same way until one of the
// certificates' validity starts or ends).

// certsFullHandshakeEvery bounds how long an endpoint's certificate is
// taken from a resumed session: a resumed session carries the chain of
// the handshake that created it, and a server that reloaded its
// certificate without changing its ticket keys would go on resuming
// sessions of the old one. A restarted server has new ticket keys (the
// resumption fails and a full handshake follows at once).
const certsFullHandshakeEvery = 5 * time.Minute

// certsSessionCache is one endpoint's tls.ClientSessionCache: it holds the
// latest session and stops offering it once a full handshake is due.
type certsSessionCache struct {
	// every is certsFullHandshakeEvery but in tests.
	every time.Duration

	mu      sync.Mutex
	key     string
	session *tls.ClientSessionState
	// fullBy is when the next full handshake is due.
	fullBy time.Time
	// ticketlessUntil: a wait after a full handshake brought no ticket
	// (a server with tickets off, as PostgreSQL has them); the next waits
	// are skipped until then.
	ticketlessUntil time.Time
}

// Get offers the stored session until a full handshake is due.
func (c *certsSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil || c.key != key || !time.Now().Before(c.fullBy) {
		return nil, false
	}
	return c.session, true
}

// Put stores a session; nil (a session the server refused) drops it.
func (c *certsSessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		if key == c.key {
			c.session = nil
		}
		return
	}
	c.key, c.session = key, cs
}

// fullHandshake records a full handshake: sessions may be resumed until
// every after it.
func (c *certsSessionCache) fullHandshake(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fullBy = now.Add(c.every)
}

// expectTicket reports whether a full handshake should wait for a ticket.
func (c *certsSessionCache) expectTicket(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !now.Before(c.ticketlessUntil)
}

// noTicket records a wait that brought no ticket: the full handshakes of
// the next every do not wait.
func (c *certsSessionCache) noTicket(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ticketlessUntil = now.Add(c.every)
}

// certsTicketWatch is one probe's view of its endpoint's session cache.
// Once armed (after the handshake), storing a session also ends the
// read that waits for it.
type certsTicketWatch struct {
	*certsSessionCache
	conn  net.Conn
	armed bool
	// stored is set once a session was stored while armed.
	stored bool
}

// Put stores the session and, once armed, ends the pending read. It runs
// on the probe's goroutine, inside tls.Conn.Read.
func (w *certsTicketWatch) Put(key string, cs *tls.ClientSessionState) {
	w.certsSessionCache.Put(key, cs)
	if w.armed && cs != nil {
		w.stored = true
		_ = w.conn.SetReadDeadline(time.Now())
	}
}

// certsRoots are the roots of one CA file. The file is read again when its
// size or modification time changes; sum identifies the contents the pool
// was built from.
type certsRoots struct {
	path string

	mu      sync.Mutex
	pool    *x509.CertPool
	sum     [32]byte
	size    int64
	modTime time.Time
}

// refresh reads the file if it changed since it was last read. On error
// the previous roots stay in force.
func (r *certsRoots) refresh() error {
	f, err := os.Open(r.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool != nil && fi.Size() == r.size && fi.ModTime().Equal(r.modTime) {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, certsMaxFileSize))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("%s holds no PEM certificate", r.path)
	}
	r.pool, r.sum, r.size, r.modTime = pool, sha256.Sum256(b), fi.Size(), fi.ModTime()
	return nil
}

// current returns the pool in force and the hash of its file's contents.
func (r *certsRoots) current() (*x509.CertPool, [32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pool, r.sum
}

// certsVerifyKey identifies one verification: the chain as presented (a
// SHA-256 over its certificates' DER), the roots (the CA file's contents;
// zero for the system roots) and the server name.
type certsVerifyKey struct {
	chain [32]byte
	roots [32]byte
	name  string
}

func certsChainSum(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		// Length-prefixed, so that two chains never hash the same bytes.
		l := len(c.Raw)
		n[0], n[1], n[2], n[3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// certsVerdictMaxAge bounds how long a verdict is reused even when no
// certificate's validity changes: the system roots may be updated under a
// running process.
const certsVerdictMaxAge = time.Hour

// certsVerdictUntil is when a verdict reached at now stops holding: the
// first start or end of validity after now among the presented
// certificates and those of the verified chains (the root from the pool
// included), and at most certsVerdictMaxAge.
func certsVerdictUntil(now time.Time, presented []*x509.Certificate, chains [][]*x509.Certificate) time.Time {
	until := now.Add(certsVerdictMaxAge)
	consider := func(c *x509.Certificate) {
		// Valid from NotBefore through NotAfter, both included.
		for _, t := range []time.Time{c.NotBefore, c.NotAfter.Add(time.Nanosecond)} {
			if t.After(now) && t.Before(until) {
				until = t
			}
		}
	}
	for _, c := range presented {
		consider(c)
	}
	for _, chain := range chains {
		for _, c := range chain {
			consider(c)
		}
	}
	return until
}

// certsVerifyCache holds verdicts by certsVerifyKey. An entry not used in
// a scrape and the one before is dropped, so the cache holds at most the
// chains of two scrapes' endpoints.
type certsVerifyCache struct {
	mu      sync.Mutex
	scrapes uint64
	entries map[certsVerifyKey]*certsVerdict
}

type certsVerdict struct {
	verified bool
	until    time.Time
	// used is the number of the last scrape that read the verdict.
	used uint64
}

func newCertsVerifyCache() *certsVerifyCache {
	return &certsVerifyCache{entries: map[certsVerifyKey]*certsVerdict{}}
}

// begin numbers a scrape.
func (c *certsVerifyCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scrapes++
	return c.scrapes
}

// end drops the entries that neither this scrape nor the one before used.
func (c *certsVerifyCache) end(scrape uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.entries {
		if v.used+1 < scrape {
			delete(c.entries, k)
		}
	}
}

func (c *certsVerifyCache) get(k certsVerifyKey, scrape uint64) (verified, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[k]
	if !ok || !time.Now().Before(v.until) {
		return false, false
	}
	v.used = max(v.used, scrape)
	return v.verified, true
}

func (c *certsVerifyCache) put(k certsVerifyKey, verified bool, until time.Time, scrape uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[k] = &certsVerdict{verified: verified, until: until, used: scrape}
}

// len is the number of cached verdicts.
func (c *certsVerifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
