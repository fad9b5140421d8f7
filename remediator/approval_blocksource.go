package remediator

import (
	"context"
	"fmt"
	"strings"

	amtemplate "github.com/prometheus/alertmanager/template"

	"github.com/warden-sre/warden/remediator/actions"
)

// decide completes a block-source decision whose gateway (the rule's
// target Deployment) the allowlist accepted: it reads the source from the
// alert's label and refuses invalid and protected sources. The target of
// cooldown, dedupe and breaker is the source, not the gateway, so that
// blocking one source does not hold back the next.
func (c *BlockSourceConfig) decide(d decision, a *amtemplate.Alert) decision {
	skip := func(reason, detail string) decision {
		d.SkipReason, d.Detail = reason, detail
		return d
	}
	raw, ok := a.Labels[c.Label]
	if !ok || raw == "" {
		return skip(ReasonInvalidTarget, fmt.Sprintf("the alert has no %s label with the source to block", c.Label))
	}
	src, err := actions.ParseSource(raw)
	if err != nil {
		return skip(ReasonInvalidTarget, err.Error())
	}
	d.Target = target{Kind: "source", Namespace: d.Target.Namespace, Name: sourceTargetName(src.String())}
	if r, protected := actions.ProtectedBy(src, c.protected); protected {
		return skip(ReasonNotAllowed, fmt.Sprintf("source %s is in the protected range %s", src, r))
	}
	req := &d.Request
	req.Source = src
	req.Blocklist, req.BlocklistKey = c.ConfigMap, c.Key
	req.BlockFor, req.MaxEntries = c.Expiry, c.MaxEntries
	req.Protected = c.protected
	setReload(req, &c.Reload)
	return d
}

// sourceTargetName turns a prefix into a name Leases accept:
// 203.0.113.7/32 -> 203.0.113.7-32, 2001:db8::/32 -> 2001-db8---32.
func sourceTargetName(prefix string) string {
	return strings.NewReplacer("/", "-", ":", "-").Replace(prefix)
}

// sweepBlocklists removes expired entries from every blocklist the policy
// writes, and reloads the gateway when it removed any. Every replica
// sweeps; the writes are conditional, so at most one removes an entry and
// the others find nothing left to do.
func (r *Remediator) sweepBlocklists(ctx context.Context, p *Policy) {
	type list struct{ ns, deployment, name string }
	seen := map[list]bool{}
	for i := range p.Rules {
		rule := &p.Rules[i]
		if rule.Action != actions.BlockSource {
			continue
		}
		c := rule.BlockSource
		for _, ns := range rule.Allow.Namespaces {
			for _, dep := range rule.Allow.Deployments {
				k := list{ns, dep, c.ConfigMap}
				if seen[k] {
					continue
				}
				seen[k] = true
				req := actions.Request{
					Kind: actions.ExpireBlocks, Namespace: ns, Deployment: dep,
					Blocklist: c.ConfigMap, BlocklistKey: c.Key, Timeout: rule.Timeout,
					Reason: "expired block-source entries", DryRun: r.dryRun || p.DryRun || rule.DryRun,
				}
				setReload(&req, &c.Reload)
				res, err := r.exec.Run(ctx, req)
				switch {
				case err != nil && actions.Reason(err) == actions.ReasonNotFound:
					// No blocklist (or gateway) in this namespace.
				case err != nil:
					r.logger.Warn("cannot remove expired block-source entries", "namespace", ns, "configmap", c.ConfigMap, "err", err)
				case res.Changed:
					r.logger.Info("expired block-source entries removed", "namespace", ns, "configmap", c.ConfigMap, "deployment", dep, "detail", res.Detail)
				}
			}
		}
	}
}
