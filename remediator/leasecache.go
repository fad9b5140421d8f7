package remediator

import (
	"context"
	"strconv"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// leaseCache mirrors the remediator's Leases in the allowlisted namespaces
// through an informer per namespace (filtered by the managed-by label), so
// that refusals (duplicate, cooldown, breaker open) are decided without an
// API call. Only claims and outcomes are written, conditionally on the
// resourceVersion read from the cache: a stale cache makes a write
// conflict, and the decision is taken again on the state read from the API
// server. A stale cache can only delay a claim, never allow a second one,
// because claims are only ever added.
type leaseCache struct {
	kube kubernetes.Interface

	mu        sync.Mutex
	ctx       context.Context // nil until start
	informers map[string]cache.SharedIndexInformer
	// written holds the Leases this process wrote, until the informer has
	// caught up with them, so that the next decision on the target does not
	// start from an older version.
	written map[string]*coordinationv1.Lease
}

func newLeaseCache(kube kubernetes.Interface) *leaseCache {
	return &leaseCache{kube: kube, informers: map[string]cache.SharedIndexInformer{}, written: map[string]*coordinationv1.Lease{}}
}

// start runs the informers of the namespaces until ctx ends. Until an
// informer has synced, decisions in its namespace read from the API server.
func (c *leaseCache) start(ctx context.Context, namespaces []string) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	c.watch(namespaces)
}

// watch adds informers for namespaces not watched yet (after a policy
// reload). Namespaces no longer allowlisted keep theirs: a handful of
// idle watches cost less than getting the bookkeeping wrong.
func (c *leaseCache) watch(namespaces []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		return
	}
	for _, ns := range namespaces {
		if _, ok := c.informers[ns]; ok {
			continue
		}
		f := informers.NewSharedInformerFactoryWithOptions(c.kube, 0, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = leaseSelector }))
		inf := f.Coordination().V1().Leases().Informer()
		c.informers[ns] = inf
		f.Start(c.ctx.Done())
	}
}

// get returns the newest known version of the Lease (nil: there is none)
// and whether the cache can answer for its namespace at all.
func (c *leaseCache) get(namespace, name string) (*coordinationv1.Lease, bool) {
	key := namespace + "/" + name
	c.mu.Lock()
	inf, ok := c.informers[namespace]
	mine := c.written[key]
	c.mu.Unlock()
	if !ok || !inf.HasSynced() {
		return nil, false
	}
	var cached *coordinationv1.Lease
	if obj, exists, err := inf.GetStore().GetByKey(key); err == nil && exists {
		cached, _ = obj.(*coordinationv1.Lease)
	}
	if mine == nil || newer(cached, mine) {
		if mine != nil {
			c.mu.Lock()
			if c.written[key] == mine {
				delete(c.written, key)
			}
			c.mu.Unlock()
		}
		return cached, true
	}
	return mine, true
}

// remember records a Lease as written by this process.
func (c *leaseCache) remember(l *coordinationv1.Lease) {
	if l == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.informers[l.Namespace]; !ok {
		return
	}
	c.written[l.Namespace+"/"+l.Name] = l
}

// newer reports whether a is at least as new as b. Resource versions are
// opaque, but the API server's are etcd revisions, which only grow; one
// that does not parse is treated as older, so the API server is asked.
func newer(a, b *coordinationv1.Lease) bool {
	if a == nil {
		return false
	}
	av, err1 := strconv.ParseUint(a.ResourceVersion, 10, 64)
	bv, err2 := strconv.ParseUint(b.ResourceVersion, 10, 64)
	return err1 == nil && err2 == nil && av >= bv
}
