// Package exportertest holds what the tests of the exporter's backend
// packages share: an adapter that runs a collector under a timeout for
// client_golang's testutil and registries, and the configuration decoder
// the exporter uses, so a test can decode one backend's section.
package exportertest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// Collector is the part of the exporter's collector contract the adapter
// needs.
type Collector interface {
	Collect(ctx context.Context, ch chan<- prometheus.Metric) error
}

// Adapter turns a Collector into a prometheus.Collector, running each
// Collect with its own timeout and remembering the last Collect error.
type Adapter struct {
	C       Collector
	Timeout time.Duration

	mu  sync.Mutex
	err error
}

// Describe sends nothing: the adapter is an unchecked collector.
func (a *Adapter) Describe(chan<- *prometheus.Desc) {}

// Collect runs the wrapped collector once.
func (a *Adapter) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), a.Timeout)
	defer cancel()
	err := a.C.Collect(ctx, ch)
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

// LastErr is the error of the last Collect.
func (a *Adapter) LastErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// DecodeStrict decodes yml into v the way the exporter reads its
// configuration file: unknown fields are errors, an empty document is not.
func DecodeStrict(yml string, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader([]byte(yml)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
