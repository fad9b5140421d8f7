package exporter

import (
	"context"
	"log/slog"
)

// PLACEHOLDER: replaced by the auth collector.

// AuthConfig configures the auth collector.
type AuthConfig struct {
	Name string `yaml:"name"`
}

func (c *AuthConfig) validate(path string) error { return nil }

func newAuthCollector(ctx context.Context, cfg *AuthConfig, kube KubernetesConfig, logger *slog.Logger) (Collector, error) {
	return nil, nil
}
