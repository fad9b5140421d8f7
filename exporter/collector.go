package exporter

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector gathers one family of metrics at scrape time.
//
// Collect must honour ctx: the scrape deadline is applied to it, and a
// collector still running when it expires is abandoned (its metrics are
// dropped and it is reported as failed). Collect may be called concurrently
// by overlapping scrapes.
type Collector interface {
	// Name is the value of the collector label on the exporter's own
	// metrics, e.g. "postgres/main".
	Name() string
	// Collect sends metrics to ch and returns an error when the collection
	// failed. Metrics sent before an error are still exposed.
	Collect(ctx context.Context, ch chan<- prometheus.Metric) error
}
