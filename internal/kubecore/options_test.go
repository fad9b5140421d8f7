package kubecore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("clusters: [:"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	tests := []struct {
		name    string
		o       Options
		wantErr string
		check   func(t *testing.T, host, ua string, qps float32, burst int)
	}{
		{
			name: "kubeconfig with limits",
			o:    Options{Kubeconfig: good, UserAgent: "warden-test", QPS: 50, Burst: 100},
			check: func(t *testing.T, host, ua string, qps float32, burst int) {
				if host != "https://127.0.0.1:6443" || ua != "warden-test" || qps != 50 || burst != 100 {
					t.Fatalf("got host=%s ua=%s qps=%v burst=%d", host, ua, qps, burst)
				}
			},
		},
		{name: "missing file", o: Options{Kubeconfig: filepath.Join(dir, "nope")}, wantErr: "kubeconfig"},
		{name: "broken file", o: Options{Kubeconfig: bad}, wantErr: "kubeconfig"},
		{name: "not in a cluster", o: Options{}, wantErr: "in-cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := RESTConfig(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg.Host, cfg.UserAgent, cfg.QPS, cfg.Burst)
			if _, err := New(tt.o); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}
