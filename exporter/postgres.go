package exporter

import "log/slog"

// PLACEHOLDER: replaced by the postgres collector.

// PostgresTarget configures the postgres collector.
type PostgresTarget struct {
	Name string `yaml:"name"`
}

func (c *PostgresTarget) validate(path string) error { return nil }

func newPostgresCollector(t PostgresTarget, logger *slog.Logger) (Collector, error) { return nil, nil }
