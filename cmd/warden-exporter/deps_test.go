package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinaryDoesNotLinkTheClientset fails when warden-exporter links the
// typed Kubernetes clientset or the k8s.io/api types: their registration
// into client-go's scheme costs the binary about 20 MiB of resident memory
// at idle, for a binary that reads only TLS Secrets and pod logs
// (internal/kubecore does that over the REST transport).
func TestBinaryDoesNotLinkTheClientset(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 || !slices.Contains(deps, "k8s.io/client-go/rest") {
		t.Fatalf("go list -deps listed %d packages without k8s.io/client-go/rest: not the exporter's dependencies", len(deps))
	}
	for _, forbidden := range []string{"k8s.io/client-go/kubernetes", "k8s.io/api/"} {
		for _, dep := range deps {
			if dep == forbidden || strings.HasPrefix(dep, strings.TrimSuffix(forbidden, "/")+"/") {
				t.Errorf("warden-exporter links %s (through %s): read core/v1 objects through internal/kubecore instead", dep, forbidden)
			}
		}
	}
}
