// Package kubeclient builds the typed Kubernetes clientset a binary uses,
// from a kubeconfig file or, when none is given, from the pod's service
// account. It links every API group's types; warden-exporter, which only
// reads a few core/v1 objects, uses internal/kubecore instead.
package kubeclient

import (
	"fmt"

	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/internal/kubecore"
)

// Options sets where the client connects, how it identifies itself and how
// fast it may go (see kubecore.Options).
type Options = kubecore.Options

// New returns a clientset built from the options.
func New(o Options) (kubernetes.Interface, error) {
	cfg, err := kubecore.RESTConfig(o)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
