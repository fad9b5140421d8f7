package exporter

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaultsAndErrors(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "empty file has no collectors", yaml: "", wantErr: "no collectors configured"},
		{name: "comment-only file has no collectors", yaml: "# nothing yet\n", wantErr: "no collectors configured"},
		{name: "scrape settings alone have no collectors", yaml: "scrape:\n  default_timeout: 5s\n", wantErr: "no collectors configured"},
		{name: "empty lists have no collectors", yaml: "postgres: []\nredis: []\n", wantErr: "no collectors configured"},
		{name: "one redis target is enough", yaml: "redis:\n  - {name: a, address: 'h:1'}\n"},
		{name: "unknown top-level field", yaml: "scrapes:\n  default_timeout: 5s\n", wantErr: "field scrapes not found"},
		{name: "unknown scrape field", yaml: "scrape:\n  timeout: 5s\n", wantErr: "field timeout not found"},
		{name: "zero default timeout", yaml: "scrape:\n  default_timeout: 0s\n", wantErr: "scrape.default_timeout"},
		{name: "negative offset", yaml: "scrape:\n  timeout_offset: -1s\n", wantErr: "scrape.timeout_offset"},
		{name: "max below default", yaml: "scrape:\n  default_timeout: 20s\n  max_timeout: 10s\n", wantErr: "scrape.max_timeout"},
		{name: "bad duration", yaml: "scrape:\n  default_timeout: soon\n", wantErr: "parse config"},
		{name: "missing target name", yaml: "redis:\n  - address: redis://127.0.0.1:6379\n", wantErr: "redis[0].name: required"},
		{name: "duplicate redis name", yaml: "redis:\n- {name: a, address: 'h:1'}\n- {name: a, address: 'h:2'}\n", wantErr: "redis[1].name"},
		{name: "duplicate postgres name", yaml: "postgres:\n- {name: a, dsn: 'postgres://u@h/a'}\n- {name: a, dsn: 'postgres://u@h/b'}\n", wantErr: "postgres[1].name: \"a\" is already used by postgres[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if cfg.Scrape != DefaultScrapeConfig {
					t.Fatalf("defaults not applied: %+v", cfg.Scrape)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseConfigKeepsUnsetScrapeDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte("scrape:\n  timeout_offset: 1s\nredis:\n  - {name: a, address: 'h:1'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scrape.TimeoutOffset != time.Second || cfg.Scrape.DefaultTimeout != DefaultScrapeConfig.DefaultTimeout {
		t.Fatalf("scrape = %+v", cfg.Scrape)
	}
}

// TestBuildFailsWithoutAKubernetesClient: a source that reads from the
// Kubernetes API fails the build, naming the cause, when no client can be
// made.
func TestBuildFailsWithoutAKubernetesClient(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-kubeconfig")
	for _, section := range []string{"certs: {kubernetes: {}}", "auth: {kubernetes: {}}"} {
		cfg, err := ParseConfig([]byte("kubernetes: {kubeconfig: " + missing + "}\n" + section + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		set, err := Build(t.Context(), cfg, discard(), nil)
		if err == nil {
			_ = set.Close()
			t.Fatalf("%s: built without a kubeconfig", section)
		}
		if !strings.Contains(err.Error(), "kubernetes: kubeconfig "+missing) {
			t.Errorf("%s: error = %v", section, err)
		}
	}
}
