package testenv

import (
	"fmt"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes cfg (the API server's address, CA and the
// client's certificate or token) as a kubeconfig file at path, the way an
// operator hands one to a binary. namespace, when set, is the context's
// default namespace.
func WriteKubeconfig(cfg *rest.Config, path, namespace string) error {
	server := cfg.Host
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["warden"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["warden"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["warden"] = &clientcmdapi.Context{Cluster: "warden", AuthInfo: "warden", Namespace: namespace}
	kc.CurrentContext = "warden"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
