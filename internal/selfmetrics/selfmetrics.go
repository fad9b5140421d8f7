// Package selfmetrics builds the registry for a warden binary's own
// metrics; the binaries never use the global registry.
package selfmetrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
)

// NewRegistry returns a registry holding the process and Go runtime
// collectors and <namespace>_build_info.
func NewRegistry(namespace string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		versioncollector.NewCollector(namespace),
	)
	return reg
}
