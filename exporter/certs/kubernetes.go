package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sre/warden/internal/kubecore"
)

// certsKubernetesPageSize is how many Secrets one list request returns;
// larger clusters are read page by page so no single answer is huge. A page
// of 500 TLS Secrets is about 1.5 MB; 10,000 Secrets take 20 requests,
// within the exporter client's burst (40), where pages of 100 would wait
// about 3 s for its rate limit (20 per second) at every scrape.
const certsKubernetesPageSize = 500

// certsAllNamespaces lists the Secrets of every namespace.
const certsAllNamespaces = ""

// KubernetesCollector reads the tls.crt of kubernetes.io/tls Secrets.
// Secret data is dropped as soon as the certificate is parsed and is never
// logged. Secrets are read page by page and each page's metrics are sent
// before the next page is asked for: a scrape holds one page of Secrets at
// a time, however many the cluster has.
type KubernetesCollector struct {
	logger     *slog.Logger
	client     *kubecore.Client
	namespaces []string
	selector   string
	pageSize   int64
	errors     *certsErrorCounter

	// subjects are the certificate subjects the linked endpoints collector
	// served at its latest scrape; nil when none is linked.
	subjects atomic.Pointer[map[string]bool]
	// index holds, for those subjects, the Secrets of the latest complete
	// listing.
	index atomic.Pointer[certsSecretIndex]
}

// NewKubernetes builds the Secrets collector for a validated
// configuration, reading through client.
func NewKubernetes(cfg *KubernetesConfig, client *kubecore.Client, logger *slog.Logger) *KubernetesCollector {
	namespaces := cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{certsAllNamespaces}
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

// wantSubjects sets the subjects the next listings index.
func (c *KubernetesCollector) wantSubjects(s map[string]bool) { c.subjects.Store(&s) }

// secretIndex is the index of the latest complete listing, nil before one.
func (c *KubernetesCollector) secretIndex() certsSecretIndex {
	if p := c.index.Load(); p != nil {
		return *p
	}
	return nil
}

// Collect lists the Secrets of every configured namespace. A Secret whose
// certificate is missing or does not parse is reported through its own
// metrics; a failed list fails the collector (Secrets already read are
// still reported).
func (c *KubernetesCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	var idx certsSecretIndex
	var subjects map[string]bool
	if p := c.subjects.Load(); p != nil {
		subjects, idx = *p, certsSecretIndex{}
	}
	var errs []error
	for _, ns := range c.namespaces {
		if err := c.list(ctx, ns, ch, subjects, idx); err != nil {
			reason := certsReasonList
			if ctx.Err() != nil {
				reason = certsReasonTimeout
			}
			c.errors.inc(reason)
			if ns == certsAllNamespaces {
				errs = append(errs, fmt.Errorf("list TLS Secrets in all namespaces: %w", err))
			} else {
				errs = append(errs, fmt.Errorf("list TLS Secrets in namespace %s: %w", ns, err))
			}
		}
	}
	// A partial listing could lack the renewed Secret: keep the previous
	// index rather than compare against part of the cluster.
	if idx != nil && len(errs) == 0 {
		c.index.Store(&idx)
	}
	c.errors.collect(ch)
	return errors.Join(errs...)
}

// list reads one namespace's TLS Secrets page by page (only kubernetes.io/tls
// Secrets: the API server filters by type), parses each Secret's tls.crt and
// sends its metrics before the next page is asked for. The leaves whose
// subject is in subjects go into idx.
func (c *KubernetesCollector) list(ctx context.Context, namespace string, ch chan<- prometheus.Metric,
	subjects map[string]bool, idx certsSecretIndex) error {
	opts := kubecore.ListOptions{
		LabelSelector: c.selector,
		FieldSelector: "type=" + kubecore.SecretTypeTLS,
		Limit:         c.pageSize,
	}
	for {
		page, err := c.client.ListSecrets(ctx, namespace, opts)
		if err != nil {
			return err
		}
		for i := range page.Items {
			s := &page.Items[i]
			source := s.Metadata.Namespace + "/" + s.Metadata.Name
			crt := s.Data[kubecore.TLSCertKey]
			var err error
			if len(crt) == 0 {
				err = certsErr(certsReasonNotFound, "the Secret has no %s", kubecore.TLSCertKey)
			} else {
				certs, perr := certsParsePEM(crt)
				err = perr
				certsCollectChain(ch, certsKindKubernetes, source, certs, true)
				if len(certs) > 0 && subjects != nil {
					if subject := certsSubjectKey(certs[0]); subjects[subject] {
						idx.add(newCertsSecretLeaf(s.Metadata.Namespace, s.Metadata.Name, certs[0]), subject)
					}
				}
			}
			certsSourceSuccess(ch, certsKindKubernetes, source, err == nil)
			if err != nil {
				reason := certsReason(err, certsReasonParse)
				c.errors.inc(reason)
				c.logger.Debug("reading Secret certificate failed", "source", source, "reason", reason, "err", err)
			}
		}
		if page.Continue() == "" {
			return nil
		}
		opts.Continue = page.Continue()
	}
}
