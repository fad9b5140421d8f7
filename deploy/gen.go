//go:build ignore

// gen writes the generated manifests (see package deploy); run it through
// "go generate ./deploy".
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/warden-sre/warden/deploy"
)

func main() {
	for _, g := range []struct {
		out string
		gen func(string) ([]byte, error)
		src string
	}{
		{deploy.PrometheusRulesFile, deploy.PrometheusRules, "../rules"},
		{deploy.DashboardsFile, deploy.DashboardConfigMaps, "../dashboards"},
	} {
		b, err := g.gen(g.src)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := os.MkdirAll(filepath.Dir(g.out), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(g.out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", filepath.Join("deploy", g.out))
	}
}
