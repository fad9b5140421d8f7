// Package kubeclient builds the one Kubernetes client a binary uses, from a
// kubeconfig file or, when none is given, from the pod's service account.
package kubeclient

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options sets how the client identifies itself and how fast it may go.
type Options struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster configuration.
	Kubeconfig string
	// UserAgent names the binary in the API server's audit log.
	UserAgent string
	// QPS and Burst are client-go's client-side rate limit. Zero keeps
	// client-go's defaults (5 and 10), which throttle any real workload,
	// so callers state theirs.
	QPS   float32
	Burst int
}

// RESTConfig returns the REST configuration the options describe.
func RESTConfig(o Options) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes configuration (give a kubeconfig when running outside a cluster): %w", err)
		}
	}
	if o.UserAgent != "" {
		cfg.UserAgent = o.UserAgent
	}
	if o.QPS > 0 {
		cfg.QPS = o.QPS
	}
	if o.Burst > 0 {
		cfg.Burst = o.Burst
	}
	return cfg, nil
}

// New returns a clientset built from the options.
func New(o Options) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(o)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
