package certs

import (
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A certificate renewed in its Secret but not served: the endpoint still
// presents the certificate the Secret held before (the pod read its
// certificate at start and was never restarted). The endpoints collector,
// linked to the Kubernetes collector (CompareWithSecrets), compares the leaf
// each endpoint serves with the leaves of the Secrets for the same subject.
//
// The same subject: equal common name and equal sets of DNS and IP subject
// alternative names (DNS names and the common name compared without
// regard to case, IP addresses in their canonical form), as a renewal of
// the same certificate request has them. Issuer, key, serial number and
// dates do not count.
//
// For an endpoint whose served leaf has the subject of at least one Secret's
// leaf:
//   - if one of those Secrets holds the served certificate (same serial
//     number), the endpoint serves what a Secret holds: stale 0, labelled
//     with that Secret (so a copy of a certificate in another namespace,
//     renewed on its own schedule, is not mistaken for a renewal);
//   - otherwise the Secret whose leaf starts latest (NotBefore; ties by
//     namespace, then name) is the renewal: stale 1 when its leaf starts
//     after the served one, 0 when not (the endpoint serves something newer
//     than any Secret).
//
// An endpoint that could not be read, or whose subject no Secret has, has
// no series: at most one per configured endpoint.

var certsServedStaleDesc = prometheus.NewDesc("warden_certs_served_stale",
	"Whether the endpoint serves an older certificate than the Kubernetes TLS Secret with the same subject holds (1: renewed but not served, the pod was not restarted) or not (0).",
	[]string{"source", "secret_namespace", "secret_name"}, nil)

// certsSubjectKey identifies the subject of a certificate: common name and
// subject alternative names, normalised.
func certsSubjectKey(c *x509.Certificate) string {
	dns := make([]string, 0, len(c.DNSNames))
	for _, n := range c.DNSNames {
		dns = append(dns, strings.ToLower(n))
	}
	slices.Sort(dns)
	ips := make([]string, 0, len(c.IPAddresses))
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	slices.Sort(ips)
	var b strings.Builder
	b.WriteString(strings.ToLower(c.Subject.CommonName))
	b.WriteByte(0)
	b.WriteString(strings.Join(slices.Compact(dns), ","))
	b.WriteByte(0)
	b.WriteString(strings.Join(slices.Compact(ips), ","))
	return b.String()
}

// certsSecretLeaf is what the comparison keeps of one Secret's leaf.
type certsSecretLeaf struct {
	namespace, name string
	serial          []byte
	notBefore       time.Time
}

func newCertsSecretLeaf(namespace, name string, leaf *x509.Certificate) certsSecretLeaf {
	return certsSecretLeaf{namespace: namespace, name: name, serial: leaf.SerialNumber.Bytes(), notBefore: leaf.NotBefore}
}

// newer orders leaves: later NotBefore first, then namespace and name.
func (l certsSecretLeaf) newer(o certsSecretLeaf) bool {
	if !l.notBefore.Equal(o.notBefore) {
		return l.notBefore.After(o.notBefore)
	}
	if l.namespace != o.namespace {
		return l.namespace < o.namespace
	}
	return l.name < o.name
}

// certsSubjectSecrets are the Secrets whose leaf has one subject: the
// newest, and every serial number held (with the first Secret, in
// namespace/name order, that holds it).
type certsSubjectSecrets struct {
	newest  certsSecretLeaf
	serials map[string]certsSecretLeaf
}

// certsSecretIndex maps subject keys to their Secrets. It holds only the
// subjects the endpoints served at their latest scrape.
type certsSecretIndex map[string]*certsSubjectSecrets

func (idx certsSecretIndex) add(leaf certsSecretLeaf, subject string) {
	s, ok := idx[subject]
	if !ok {
		idx[subject] = &certsSubjectSecrets{newest: leaf, serials: map[string]certsSecretLeaf{string(leaf.serial): leaf}}
		return
	}
	if leaf.newer(s.newest) {
		s.newest = leaf
	}
	if prev, ok := s.serials[string(leaf.serial)]; !ok || leaf.namespace < prev.namespace ||
		(leaf.namespace == prev.namespace && leaf.name < prev.name) {
		s.serials[string(leaf.serial)] = leaf
	}
}

// certsServedStale compares a served leaf with the Secrets of its subject;
// ok is false when no Secret has its subject.
func (idx certsSecretIndex) servedStale(served *x509.Certificate) (secret certsSecretLeaf, stale, ok bool) {
	s, ok := idx[certsSubjectKey(served)]
	if !ok {
		return certsSecretLeaf{}, false, false
	}
	if holder, ok := s.serials[string(served.SerialNumber.Bytes())]; ok {
		return holder, false, true
	}
	return s.newest, s.newest.notBefore.After(served.NotBefore), true
}

// certsCollectServedStale publishes the subjects the endpoints serve to the
// Kubernetes collector (which indexes only those) and sends
// warden_certs_served_stale for every endpoint read in this scrape,
// against the Secrets of the Kubernetes collector's latest complete
// listing.
func certsCollectServedStale(ch chan<- prometheus.Metric, k *KubernetesCollector, targets []*certsEndpointTarget, results []certsProbeResult) {
	subjects := make(map[string]bool, len(targets))
	for _, r := range results {
		if r.err == nil && len(r.certs) > 0 {
			subjects[certsSubjectKey(r.certs[0])] = true
		}
	}
	k.wantSubjects(subjects)
	idx := k.secretIndex()
	if idx == nil {
		return
	}
	for i, r := range results {
		if r.err != nil || len(r.certs) == 0 {
			continue
		}
		secret, stale, ok := idx.servedStale(r.certs[0])
		if !ok {
			continue
		}
		v := 0.0
		if stale {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(certsServedStaleDesc, prometheus.GaugeValue, v, targets[i].source, secret.namespace, secret.name)
	}
}
