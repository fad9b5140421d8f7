package remediator

import (
	"context"
	"strconv"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinformers "k8s.io/client-go/informers/coordination/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// informerSet runs one informer per namespace, made by newInformer when the
// namespace is first watched, from start until start's context ends.
// Namespaces no longer allowlisted after a reload keep theirs: a handful of
// idle watches cost less than getting the bookkeeping wrong.
type informerSet struct {
	newInformer func(namespace string) cache.SharedIndexInformer

	mu        sync.Mutex
	ctx       context.Context // nil until start; ends with stop
	stop      context.CancelFunc
	informers map[string]cache.SharedIndexInformer
}

func newInformerSet(newInformer func(namespace string) cache.SharedIndexInformer) *informerSet {
	return &informerSet{newInformer: newInformer, informers: map[string]cache.SharedIndexInformer{}}
}

// start runs the informers of the namespaces until ctx ends.
func (s *informerSet) start(ctx context.Context, namespaces []string) {
	s.mu.Lock()
	s.ctx, s.stop = context.WithCancel(ctx)
	s.mu.Unlock()
	s.watch(namespaces)
}

// close stops every informer of the set for good; the caller asks the API
// server, or does without, from then on.
func (s *informerSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		s.stop()
	}
}

// watch adds informers for namespaces not watched yet. Before start it does
// nothing; start watches the policy's namespaces then.
func (s *informerSet) watch(namespaces []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	for _, ns := range namespaces {
		if _, ok := s.informers[ns]; ok {
			continue
		}
		inf := s.newInformer(ns)
		s.informers[ns] = inf
		go inf.Run(s.ctx.Done())
	}
}

// synced returns the store of the namespace's informer once it has synced;
// until then (or for a namespace not watched) the caller asks the API
// server.
func (s *informerSet) synced(namespace string) (cache.Store, bool) {
	s.mu.Lock()
	inf, ok := s.informers[namespace]
	s.mu.Unlock()
	if !ok || !inf.HasSynced() || inf.IsStopped() {
		return nil, false
	}
	return inf.GetStore(), true
}

// hasInformer reports whether namespace is watched (synced or not).
func (s *informerSet) hasInformer(namespace string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.informers[namespace]
	return ok
}

// leaseCache mirrors the remediator's Leases in the allowlisted namespaces
// through an informer per namespace (filtered by the managed-by label), so
// that refusals (duplicate, cooldown, breaker open), the breaker gauge and
// the status page need no API call. Only claims and outcomes are written,
// conditionally on the resourceVersion read from the cache: a stale cache
// makes a write conflict, and the decision is taken again on the state read
// from the API server. A stale cache can only delay a claim, never allow a
// second one, because claims are only ever added.
type leaseCache struct {
	*informerSet

	mu sync.Mutex
	// written holds the Leases this process wrote, until the informer has
	// caught up with them, so that the next decision on the target does not
	// start from an older version.
	written map[string]*coordinationv1.Lease
}

func newLeaseCache(kube kubernetes.Interface) *leaseCache {
	return &leaseCache{
		informerSet: newInformerSet(func(ns string) cache.SharedIndexInformer {
			return coordinformers.NewFilteredLeaseInformer(kube, ns, 0, cache.Indexers{},
				func(o *metav1.ListOptions) { o.LabelSelector = leaseSelector })
		}),
		written: map[string]*coordinationv1.Lease{},
	}
}

// get returns the newest known version of the Lease (nil: there is none)
// and whether the cache can answer for its namespace at all.
func (c *leaseCache) get(namespace, name string) (*coordinationv1.Lease, bool) {
	store, ok := c.synced(namespace)
	if !ok {
		return nil, false
	}
	var cached *coordinationv1.Lease
	if obj, exists, err := store.GetByKey(namespace + "/" + name); err == nil && exists {
		cached, _ = obj.(*coordinationv1.Lease)
	}
	return c.newest(namespace+"/"+name, cached), true
}

// list returns the newest known version of every Lease of the remediator
// in the namespace, and whether the cache can answer for it.
func (c *leaseCache) list(namespace string) ([]*coordinationv1.Lease, bool) {
	store, ok := c.synced(namespace)
	if !ok {
		return nil, false
	}
	var out []*coordinationv1.Lease
	seen := map[string]bool{}
	for _, obj := range store.List() {
		if l, ok := obj.(*coordinationv1.Lease); ok {
			key := l.Namespace + "/" + l.Name
			seen[key] = true
			out = append(out, c.newest(key, l))
		}
	}
	// Leases this process created that the informer has not seen yet.
	c.mu.Lock()
	var extra []string
	for key, l := range c.written {
		if l.Namespace == namespace && !seen[key] {
			extra = append(extra, key)
		}
	}
	c.mu.Unlock()
	for _, key := range extra {
		if l := c.newest(key, nil); l != nil {
			out = append(out, l)
		}
	}
	return out, true
}

// newest is the newer of the informer's copy and the one this process
// wrote, forgetting the written one once the informer has caught up.
func (c *leaseCache) newest(key string, cached *coordinationv1.Lease) *coordinationv1.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := c.written[key]
	if mine == nil {
		return cached
	}
	if newer(cached, mine) {
		delete(c.written, key)
		return cached
	}
	return mine
}

// remember records a Lease as written by this process.
func (c *leaseCache) remember(l *coordinationv1.Lease) {
	if l == nil || !c.hasInformer(l.Namespace) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
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
