package exporter

import (
	"os"
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
		{name: "empty file is valid", yaml: ""},
		{name: "unknown top-level field", yaml: "scrapes:\n  default_timeout: 5s\n", wantErr: "field scrapes not found"},
		{name: "unknown scrape field", yaml: "scrape:\n  timeout: 5s\n", wantErr: "field timeout not found"},
		{name: "zero default timeout", yaml: "scrape:\n  default_timeout: 0s\n", wantErr: "scrape.default_timeout"},
		{name: "negative offset", yaml: "scrape:\n  timeout_offset: -1s\n", wantErr: "scrape.timeout_offset"},
		{name: "max below default", yaml: "scrape:\n  default_timeout: 20s\n  max_timeout: 10s\n", wantErr: "scrape.max_timeout"},
		{name: "bad duration", yaml: "scrape:\n  default_timeout: soon\n", wantErr: "parse config"},
		{name: "missing target name", yaml: "redis:\n  - address: redis://127.0.0.1:6379\n", wantErr: "redis[0].name: required"},
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
	cfg, err := ParseConfig([]byte("scrape:\n  timeout_offset: 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scrape.TimeoutOffset != time.Second || cfg.Scrape.DefaultTimeout != DefaultScrapeConfig.DefaultTimeout {
		t.Fatalf("scrape = %+v", cfg.Scrape)
	}
}

func TestSecretSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARDEN_TEST_SECRET", "from-env")
	tests := []struct {
		name    string
		secret  Secret
		want    string
		wantErr string
	}{
		{name: "file, trailing newline dropped", secret: Secret{File: file}, want: "from-file"},
		{name: "env", secret: Secret{Env: "WARDEN_TEST_SECRET"}, want: "from-env"},
		{name: "unset", secret: Secret{}, want: ""},
		{name: "missing file", secret: Secret{File: filepath.Join(dir, "nope")}, wantErr: "read secret file"},
		{name: "missing env", secret: Secret{Env: "WARDEN_TEST_SECRET_MISSING"}, wantErr: "WARDEN_TEST_SECRET_MISSING is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.secret.Value()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Value() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if err := (Secret{File: file, Env: "X"}).validate("p"); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("file and env together: %v", err)
	}
}
