package kubeclient

import (
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/warden-sre/warden/internal/testenv"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(&rest.Config{Host: "https://127.0.0.1:6443", BearerToken: "abc"}, good, ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{name: "kubeconfig", o: Options{Kubeconfig: good, UserAgent: "warden-test", QPS: 50, Burst: 100}},
		{name: "missing kubeconfig", o: Options{Kubeconfig: filepath.Join(dir, "nope")}, wantErr: "kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c == nil {
				t.Fatalf("New = %v, %v", c, err)
			}
		})
	}
}
