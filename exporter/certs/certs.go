// Package certs reports the certificates of TLS endpoints, PEM/DER files
// and Kubernetes TLS Secrets: expiry, chain position and verification, with
// errors counted by reason. Each configured source is its own collector.
package certs

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// CertsConfig configures the certificate-expiry collectors. Each source
// that is present becomes its own collector (certs/endpoints, certs/files,
// certs/kubernetes).
type Config struct {
	Endpoints  *EndpointsConfig  `yaml:"endpoints"`
	Files      *FilesConfig      `yaml:"files"`
	Kubernetes *KubernetesConfig `yaml:"kubernetes"`
}

// CertsEndpointsConfig lists TLS endpoints whose presented chain is read at
// every scrape.
type EndpointsConfig struct {
	// Concurrency bounds how many endpoints are probed at once; zero (the
	// default) sizes it from the number of endpoints, see
	// certsAutoConcurrency.
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one probe (default 2s); an explicit zero means the
	// scrape deadline.
	Timeout time.Duration `yaml:"timeout"`
	// CAFile holds PEM roots to verify the chains against; empty means the
	// system roots.
	CAFile  string     `yaml:"ca_file"`
	Targets []Endpoint `yaml:"targets"`
}

// CertsEndpoint is one TLS endpoint.
type Endpoint struct {
	// Address is host:port.
	Address string `yaml:"address"`
	// ServerName is sent as SNI and verified against the leaf; default: the
	// host of Address.
	ServerName string `yaml:"server_name"`
	// Protocol is "tls" (HTTPS, rediss and any TLS service; the default) or
	// "postgres" (PostgreSQL's SSLRequest before the handshake).
	Protocol string `yaml:"protocol"`
	// Name is the source label; default: Address.
	Name string `yaml:"name"`
	// CAFile overrides the section's ca_file for this endpoint.
	CAFile string `yaml:"ca_file"`
}

// CertsFilesConfig lists PEM files (or DER files) on disk.
type FilesConfig struct {
	// Paths are filepath.Glob patterns; each matching file may hold several
	// certificates.
	Paths []string `yaml:"paths"`
}

// CertsKubernetesConfig selects kubernetes.io/tls Secrets.
type KubernetesConfig struct {
	// Namespaces to list; empty means all namespaces.
	Namespaces []string `yaml:"namespaces"`
	// LabelSelector filters Secrets, e.g. "app.kubernetes.io/part-of=auth".
	LabelSelector string `yaml:"label_selector"`
}

const (
	certsProtocolTLS      = "tls"
	certsProtocolPostgres = "postgres"

	// certsDefaultTimeout bounds one probe: far above a healthy handshake,
	// even across regions on a loaded machine, and small against a scrape
	// deadline (9.25s of a default 10s scrape), so a hanging endpoint holds
	// its slot for a fraction of the scrape.
	certsDefaultTimeout = 2 * time.Second
	// With the default concurrency, up to a quarter of the endpoints
	// (at least 64, at most 256) can hang at once and still cost the
	// scrape a single timeout.
	certsMinAutoConcurrency = 64
	certsMaxAutoConcurrency = 256
	certsMaxConcurrency     = 1024
)

// UnmarshalYAML applies defaults before decoding, through the decoder's
// own unmarshal function so that strict decoding still applies.
func (c *EndpointsConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain EndpointsConfig
	p := plain{Timeout: certsDefaultTimeout}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = EndpointsConfig(p)
	return nil
}

// UnmarshalYAML applies defaults before decoding.
func (t *Endpoint) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Endpoint
	p := plain{Protocol: certsProtocolTLS}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*t = Endpoint(p)
	return nil
}

// Validate checks a configuration decoded from YAML (defaults applied);
// errors name the field under path.
func (c *Config) Validate(path string) error {
	if c.Endpoints == nil && c.Files == nil && c.Kubernetes == nil {
		return fmt.Errorf("%s: configure at least one of endpoints, files, kubernetes", path)
	}
	if e := c.Endpoints; e != nil {
		p := path + ".endpoints"
		if e.Concurrency < 0 || e.Concurrency > certsMaxConcurrency {
			return fmt.Errorf("%s.concurrency: must be between 1 and %d, or 0 to size it from the number of targets", p, certsMaxConcurrency)
		}
		if e.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative", p)
		}
		if len(e.Targets) == 0 {
			return fmt.Errorf("%s.targets: at least one target is required", p)
		}
		sources := map[string]int{}
		for i := range e.Targets {
			t := &e.Targets[i]
			tp := fmt.Sprintf("%s.targets[%d]", p, i)
			host, port, err := net.SplitHostPort(t.Address)
			if err != nil {
				return fmt.Errorf("%s.address: %q is not host:port: %w", tp, t.Address, err)
			}
			if host == "" || port == "" {
				return fmt.Errorf("%s.address: %q needs both a host and a port", tp, t.Address)
			}
			switch t.Protocol {
			case certsProtocolTLS, certsProtocolPostgres:
			default:
				return fmt.Errorf("%s.protocol: %q is not one of tls, postgres", tp, t.Protocol)
			}
			src := t.source()
			if prev, ok := sources[src]; ok {
				return fmt.Errorf("%s: source %q is already used by %s.targets[%d] (set name to tell them apart)", tp, src, p, prev)
			}
			sources[src] = i
		}
	}
	if f := c.Files; f != nil {
		p := path + ".files.paths"
		if len(f.Paths) == 0 {
			return fmt.Errorf("%s: at least one path is required", p)
		}
		for i, pattern := range f.Paths {
			if pattern == "" {
				return fmt.Errorf("%s[%d]: must not be empty", p, i)
			}
			if _, err := filepath.Match(pattern, ""); err != nil {
				return fmt.Errorf("%s[%d]: %q: %w", p, i, pattern, err)
			}
		}
	}
	if k := c.Kubernetes; k != nil {
		p := path + ".kubernetes"
		for i, ns := range k.Namespaces {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return fmt.Errorf("%s.namespaces[%d]: %q is not a namespace name: %s", p, i, ns, errs[0])
			}
			if slices.Index(k.Namespaces, ns) != i {
				return fmt.Errorf("%s.namespaces[%d]: %q is listed twice", p, i, ns)
			}
		}
		if _, err := labels.Parse(k.LabelSelector); err != nil {
			return fmt.Errorf("%s.label_selector: %w", p, err)
		}
	}
	return nil
}

func (t Endpoint) source() string {
	if t.Name != "" {
		return t.Name
	}
	return t.Address
}

// Source kinds, the values of the source_kind label.
const (
	certsKindEndpoint   = "endpoint"
	certsKindFile       = "file"
	certsKindKubernetes = "kubernetes"
)

// Error reasons, the values of the reason label of warden_certs_errors_total.
const (
	certsReasonDial            = "dial"
	certsReasonTimeout         = "timeout"
	certsReasonHandshake       = "handshake"
	certsReasonSSLNotSupported = "ssl_not_supported"
	certsReasonProtocol        = "protocol"
	certsReasonSkipped         = "skipped"
	certsReasonParse           = "parse"
	certsReasonNotFound        = "not_found"
	certsReasonRead            = "read"
	certsReasonList            = "list"
)

// Positions, the values of the position label.
const (
	certsPositionLeaf         = "leaf"
	certsPositionIntermediate = "intermediate"
	certsPositionRoot         = "root"
)

var (
	certsCertLabels   = []string{"source_kind", "source", "subject_CN", "issuer_CN", "serial_number", "position"}
	certsSourceLabels = []string{"source_kind", "source"}

	certsNotAfterDesc = prometheus.NewDesc("x509_cert_not_after",
		"Expiration date of the certificate, as a Unix timestamp in seconds.",
		certsCertLabels, nil)
	certsNotBeforeDesc = prometheus.NewDesc("x509_cert_not_before",
		"Start of the validity period of the certificate, as a Unix timestamp in seconds.",
		certsCertLabels, nil)
	certsEarliestNotAfterDesc = prometheus.NewDesc("warden_certs_chain_earliest_not_after",
		"Earliest expiration date among the certificates of the source, as a Unix timestamp in seconds.",
		certsSourceLabels, nil)
	certsChainVerifiedDesc = prometheus.NewDesc("warden_certs_chain_verified",
		"Whether the chain presented by the endpoint verifies against the configured roots for its server name (1) or not (0).",
		certsSourceLabels, nil)
	certsSourceSuccessDesc = prometheus.NewDesc("warden_certs_source_success",
		"Whether the certificates of the source were read and parsed in this scrape (1) or not (0).",
		certsSourceLabels, nil)
	certsErrorsDesc = prometheus.NewDesc("warden_certs_errors_total",
		"Failures to read certificates from a source, by reason.",
		[]string{"source_kind", "reason"}, nil)
)

// certsErrorCounter counts failures by reason across scrapes. The reasons of
// a source kind are fixed, so every one is exposed from the start.
type certsErrorCounter struct {
	kind    string
	reasons []string
	mu      sync.Mutex
	counts  map[string]float64
}

func newCertsErrorCounter(kind string, reasons ...string) *certsErrorCounter {
	c := &certsErrorCounter{kind: kind, reasons: reasons, counts: make(map[string]float64, len(reasons))}
	for _, r := range reasons {
		c.counts[r] = 0
	}
	return c
}

func (c *certsErrorCounter) inc(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.counts[reason]; !ok {
		// Keep the label bounded even if a new reason slips in.
		reason = "other"
	}
	c.counts[reason]++
}

func (c *certsErrorCounter) collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(certsErrorsDesc, prometheus.CounterValue, n, c.kind, r)
	}
}

// certsError is a failure to read a source's certificates, with the reason
// it is counted under.
type certsError struct {
	reason string
	err    error
}

func (e *certsError) Error() string { return e.err.Error() }
func (e *certsError) Unwrap() error { return e.err }

func certsErr(reason string, format string, args ...any) error {
	return &certsError{reason: reason, err: fmt.Errorf(format, args...)}
}

func certsReason(err error, fallback string) string {
	if ce, ok := errors.AsType[*certsError](err); ok {
		return ce.reason
	}
	return fallback
}

// certsPositions names each certificate's place in its chain. In a chain as
// a server presents it (firstIsLeaf) the first certificate is the leaf even
// when it signed itself. In a file, which may just as well be a CA bundle,
// the first certificate is the leaf only when it is not a CA. A root signs
// itself; everything else is an intermediate.
func certsPositions(certs []*x509.Certificate, firstIsLeaf bool) []string {
	pos := make([]string, len(certs))
	for i, c := range certs {
		switch {
		case i == 0 && (firstIsLeaf || !c.IsCA):
			pos[i] = certsPositionLeaf
		case certsSelfSigned(c):
			pos[i] = certsPositionRoot
		default:
			pos[i] = certsPositionIntermediate
		}
	}
	return pos
}

// certsSelfSigned reports whether c is issued by its own subject and its
// signature checks with its own key. Roots signed with algorithms Go no
// longer accepts (SHA-1) still count as self-signed by name.
func certsSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
	if err == nil {
		return true
	}
	var insecure x509.InsecureAlgorithmError
	return errors.As(err, &insecure)
}

// certsCollectChain sends the expiry metrics of one source's certificates
// and its earliest expiry. The same certificate twice in one source (a
// bundle that repeats itself) is reported once.
func certsCollectChain(ch chan<- prometheus.Metric, kind, source string, certs []*x509.Certificate, firstIsLeaf bool) {
	if len(certs) == 0 {
		return
	}
	positions := certsPositions(certs, firstIsLeaf)
	seen := make(map[[4]string]bool, len(certs))
	earliest := certs[0].NotAfter
	for i, c := range certs {
		if c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
		key := [4]string{c.Subject.CommonName, c.Issuer.CommonName, c.SerialNumber.String(), positions[i]}
		if seen[key] {
			continue
		}
		seen[key] = true
		ch <- prometheus.MustNewConstMetric(certsNotAfterDesc, prometheus.GaugeValue, float64(c.NotAfter.Unix()),
			kind, source, key[0], key[1], key[2], key[3])
		ch <- prometheus.MustNewConstMetric(certsNotBeforeDesc, prometheus.GaugeValue, float64(c.NotBefore.Unix()),
			kind, source, key[0], key[1], key[2], key[3])
	}
	ch <- prometheus.MustNewConstMetric(certsEarliestNotAfterDesc, prometheus.GaugeValue, float64(earliest.Unix()), kind, source)
}

func certsSourceSuccess(ch chan<- prometheus.Metric, kind, source string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(certsSourceSuccessDesc, prometheus.GaugeValue, v, kind, source)
}
