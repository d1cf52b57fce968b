package k8s

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables the driver reads (see README.md).
const (
	// EnvNamespace names the Kubernetes namespace pods and PVCs go in.
	EnvNamespace = "POCKETCI_K8S_NAMESPACE"
	// EnvStorageClass names the StorageClass of the PVCs; unset means the
	// cluster's default class.
	EnvStorageClass = "POCKETCI_K8S_STORAGE_CLASS"
	// EnvVolumeSize is the size a PVC requests when CreateVolume gets 0
	// (a Kubernetes quantity such as 1Gi).
	EnvVolumeSize = "POCKETCI_K8S_VOLUME_SIZE"
	// EnvCombinedLogs, set to 1, accepts clusters without the
	// PodLogsQuerySplitStreams feature: all output is then written to stdout.
	EnvCombinedLogs = "POCKETCI_K8S_COMBINED_LOGS"
)

// Config is how the driver reaches the cluster and what it creates there.
type Config struct {
	// Rest is the client configuration (from KUBECONFIG, then in-cluster).
	Rest *rest.Config
	// Namespace is the Kubernetes namespace of the driver's pods and PVCs.
	Namespace string
	// StorageClass is the StorageClass of the PVCs; nil means the default.
	StorageClass *string
	// VolumeSize is what a PVC requests when CreateVolume is given size 0.
	VolumeSize resource.Quantity
	// CombinedLogs accepts a cluster without split log streams and writes
	// all output to stdout instead of failing Logs.
	CombinedLogs bool
}

// ConfigFromEnv reads the configuration the client-go way: the kubeconfig
// files named by KUBECONFIG when it is set, else the in-cluster service
// account when running in a pod, else ~/.kube/config. The POCKETCI_K8S_*
// variables set the rest.
func ConfigFromEnv() (Config, error) {
	rc, err := restConfig()
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Rest: rc, Namespace: "default", VolumeSize: resource.MustParse("1Gi")}
	if ns := os.Getenv(EnvNamespace); ns != "" {
		cfg.Namespace = ns
	}
	if sc, ok := os.LookupEnv(EnvStorageClass); ok && sc != "" {
		cfg.StorageClass = &sc
	}
	if s := os.Getenv(EnvVolumeSize); s != "" {
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return Config{}, fmt.Errorf("%s=%q: %w", EnvVolumeSize, s, err)
		}
		cfg.VolumeSize = q
	}
	cfg.CombinedLogs = os.Getenv(EnvCombinedLogs) == "1"
	return cfg, nil
}

func restConfig() (*rest.Config, error) {
	if os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if rc, err := rest.InClusterConfig(); err == nil {
			return rc, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no cluster configured (set KUBECONFIG, or run in a pod): %w", err)
	}
	return rc, nil
}
