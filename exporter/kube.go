package exporter

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// clientset builds a Kubernetes client from the kubeconfig file, or from the
// pod's service account when no file is configured (in-cluster).
func (k KubernetesConfig) clientset() (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	if k.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubernetes.kubeconfig %s: %w", k.Kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes in-cluster configuration (set kubernetes.kubeconfig when running outside a cluster): %w", err)
		}
	}
	cfg.UserAgent = "warden-exporter"
	// Listing Secrets page by page and following pod logs make bursts of
	// requests; client-go's default of 5 per second would throttle a scrape.
	cfg.QPS, cfg.Burst = 20, 40
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
