package exporter

import "log/slog"

// PLACEHOLDER: replaced by the certs collector.

// CertsConfig configures the certs collector.
type CertsConfig struct {
	Name string `yaml:"name"`
}

func (c *CertsConfig) validate(path string) error { return nil }

func newCertsCollectors(cfg *CertsConfig, kube KubernetesConfig, logger *slog.Logger) ([]Collector, error) {
	return nil, nil
}
