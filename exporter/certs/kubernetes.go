package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// certsKubernetesPageSize is how many Secrets one list request returns;
// larger clusters are read page by page so no single answer is huge.
const certsKubernetesPageSize = 100

// KubernetesCollector reads the tls.crt of kubernetes.io/tls Secrets.
// Secret data is dropped as soon as the certificate is parsed and is never
// logged; only the parsed certificates' dates and names are kept until the
// metrics are sent.
type KubernetesCollector struct {
	logger     *slog.Logger
	client     kubernetes.Interface
	namespaces []string
	selector   string
	pageSize   int64
	errors     *certsErrorCounter
}

// NewKubernetes builds the Secrets collector for a validated
// configuration, reading through client.
func NewKubernetes(cfg *KubernetesConfig, client kubernetes.Interface, logger *slog.Logger) *KubernetesCollector {
	namespaces := cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	return &KubernetesCollector{
		logger:     logger.With("source_kind", certsKindKubernetes),
		client:     client,
		namespaces: namespaces,
		selector:   cfg.LabelSelector,
		pageSize:   certsKubernetesPageSize,
		errors:     newCertsErrorCounter(certsKindKubernetes, certsReasonList, certsReasonTimeout, certsReasonNotFound, certsReasonParse),
	}
}

// Name is "certs/kubernetes".
func (c *KubernetesCollector) Name() string { return "certs/kubernetes" }

// certsSecretCerts is what is kept of one Secret.
type certsSecretCerts struct {
	source string
	certs  []*x509.Certificate
	err    error
}

// Collect lists the Secrets of every configured namespace. A Secret whose
// certificate is missing or does not parse is reported through its own
// metrics; a failed list fails the collector (Secrets already read are
// still reported).
func (c *KubernetesCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	var errs []error
	for _, ns := range c.namespaces {
		secrets, err := c.list(ctx, ns)
		for _, s := range secrets {
			certsCollectChain(ch, certsKindKubernetes, s.source, s.certs, true)
			certsSourceSuccess(ch, certsKindKubernetes, s.source, s.err == nil)
			if s.err != nil {
				reason := certsReason(s.err, certsReasonParse)
				c.errors.inc(reason)
				c.logger.Debug("reading Secret certificate failed", "source", s.source, "reason", reason, "err", s.err)
			}
		}
		if err != nil {
			reason := certsReasonList
			if ctx.Err() != nil {
				reason = certsReasonTimeout
			}
			c.errors.inc(reason)
			if ns == metav1.NamespaceAll {
				errs = append(errs, fmt.Errorf("list TLS Secrets in all namespaces: %w", err))
			} else {
				errs = append(errs, fmt.Errorf("list TLS Secrets in namespace %s: %w", ns, err))
			}
		}
	}
	c.errors.collect(ch)
	return errors.Join(errs...)
}

// list reads one namespace's TLS Secrets page by page and parses each
// Secret's tls.crt as it goes, so no page outlives its parsing.
func (c *KubernetesCollector) list(ctx context.Context, namespace string) ([]certsSecretCerts, error) {
	opts := metav1.ListOptions{
		LabelSelector: c.selector,
		FieldSelector: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String(),
		Limit:         c.pageSize,
	}
	var out []certsSecretCerts
	for {
		page, err := c.client.CoreV1().Secrets(namespace).List(ctx, opts)
		if err != nil {
			return out, err
		}
		for i := range page.Items {
			s := &page.Items[i]
			parsed := certsSecretCerts{source: s.Namespace + "/" + s.Name}
			crt := s.Data[corev1.TLSCertKey]
			if len(crt) == 0 {
				parsed.err = certsErr(certsReasonNotFound, "the Secret has no %s", corev1.TLSCertKey)
			} else {
				parsed.certs, parsed.err = certsParsePEM(crt)
			}
			out = append(out, parsed)
		}
		if page.Continue == "" {
			return out, nil
		}
		opts.Continue = page.Continue
	}
}
