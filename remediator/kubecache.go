package remediator

import (
	"context"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// targetCache mirrors what the gates and verification read about the
// targets: the allowlisted Namespaces (their freeze annotations) and the
// Deployments in them (freeze annotations, rollout state), through
// informers per namespace. A storm of alerts on a target is then refused
// without an API call per delivery; a decision to act confirms the gates
// against the API server first (see handleFiring), so the cache's lag
// (the watch's, milliseconds) can delay an action but not allow one the
// API server's state would refuse.
type targetCache struct {
	deployments *informerSet
	namespaces  *informerSet
	// namespacesForbidden is set once listing namespaces was refused (the
	// shipped RBAC grants no cluster-wide namespace access); the freeze
	// annotations of namespaces are then not read at all.
	namespacesForbidden atomic.Bool
}

func newTargetCache(kube kubernetes.Interface) *targetCache {
	c := &targetCache{}
	c.deployments = newInformerSet(func(ns string) cache.SharedIndexInformer {
		return appsinformers.NewDeploymentInformer(kube, ns, 0, cache.Indexers{})
	})
	c.namespaces = newInformerSet(func(ns string) cache.SharedIndexInformer {
		inf := coreinformers.NewFilteredNamespaceInformer(kube, 0, cache.Indexers{},
			func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + ns })
		// Without permission the reflector would retry (and log) for
		// ever: the namespace informers stop instead, and decisions do
		// not ask the API server for namespaces they may not read. A
		// permission granted later takes effect on restart.
		_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			if apierrors.IsForbidden(err) {
				c.namespacesForbidden.Store(true)
				c.namespaces.close()
				return
			}
			cache.DefaultWatchErrorHandler(ctx, r, err)
		})
		return inf
	})
	return c
}

func (c *targetCache) start(ctx context.Context, namespaces []string) {
	c.deployments.start(ctx, namespaces)
	c.namespaces.start(ctx, namespaces)
}

func (c *targetCache) watch(namespaces []string) {
	c.deployments.watch(namespaces)
	c.namespaces.watch(namespaces)
}

// deployment returns the cached Deployment (nil: there is none) and
// whether the cache can answer for its namespace.
func (c *targetCache) deployment(namespace, name string) (*appsv1.Deployment, bool) {
	store, ok := c.deployments.synced(namespace)
	if !ok {
		return nil, false
	}
	obj, exists, err := store.GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return nil, err == nil
	}
	d, ok := obj.(*appsv1.Deployment)
	return d, ok
}

// namespace returns the cached Namespace (nil: there is none) and whether
// the cache can answer.
func (c *targetCache) namespace(name string) (*corev1.Namespace, bool) {
	store, ok := c.namespaces.synced(name)
	if !ok {
		return nil, false
	}
	obj, exists, err := store.GetByKey(name)
	if err != nil || !exists {
		return nil, err == nil
	}
	ns, ok := obj.(*corev1.Namespace)
	return ns, ok
}
