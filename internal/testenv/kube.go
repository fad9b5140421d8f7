package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const kubeInstall = "scripts/tools.sh etcd kube-apiserver, then eval \"$(scripts/tools.sh env)\" (sets KUBEBUILDER_ASSETS)"

// Kube is a real etcd + kube-apiserver pair with RBAC authorization, started
// through envtest. There is no scheduler, controller-manager or kubelet.
type Kube struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	env    *envtest.Environment
}

// KubeOption changes how the API server is started.
type KubeOption func(*envtest.Environment)

// WithCRDs installs the CustomResourceDefinitions found in the given files or
// directories before the server is handed out.
func WithCRDs(paths ...string) KubeOption {
	return func(e *envtest.Environment) {
		e.CRDDirectoryPaths = append(e.CRDDirectoryPaths, paths...)
		e.ErrorIfCRDPathMissing = true
	}
}

// NewKube starts etcd and kube-apiserver from KUBEBUILDER_ASSETS.
func NewKube(opts ...KubeOption) (*Kube, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set (build the API server: %s)", kubeInstall)
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s missing in KUBEBUILDER_ASSETS=%s (build it: %s)", bin, assets, kubeInstall)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("admin client: %w", err)
	}
	return &Kube{Config: cfg, Client: client, env: env}, nil
}

// StartKube starts an API server for one test; it skips the test under
// -short. Prefer one per package through NewLazy, with a namespace per
// test.
func StartKube(t testing.TB, opts ...KubeOption) *Kube {
	t.Helper()
	skipUnderShort(t)
	k, err := NewKube(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

// AddUser creates a user authenticated by client certificate, in the given
// groups, and returns its client configuration. It has no permissions until
// RBAC grants them.
func (k *Kube) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := k.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	return u.Config(), nil
}

// Stop ends the API server and etcd and removes their data.
func (k *Kube) Stop() {
	_ = k.env.Stop()
}
