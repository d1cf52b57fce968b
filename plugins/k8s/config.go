package k8s

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables the driver reads for the fields a Config leaves
// empty (see README.md).
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

// Config is one driver instance's configuration: how it reaches the cluster
// and what it creates there. Every field is optional; an empty one takes
// its default from the environment (KUBECONFIG and the POCKETCI_K8S_*
// variables), then the built-in default.
//
// KubeconfigData is a secret (it holds credentials): it never appears in a
// log line, an error or the config's String.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file. Empty: the files of
	// KUBECONFIG, else the pod's service account when running in a
	// cluster, else ~/.kube/config.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// KubeconfigData is a whole kubeconfig, inline (YAML or JSON). It
	// excludes Kubeconfig.
	KubeconfigData string `json:"kubeconfig_data,omitempty"`
	// Context is the kubeconfig context to use; empty is its current one.
	Context string `json:"context,omitempty"`
	// K8sNamespace is the Kubernetes namespace of the driver's pods and
	// PVCs (it must exist). Default: POCKETCI_K8S_NAMESPACE, else "default".
	K8sNamespace string `json:"k8s_namespace,omitempty"`
	// StorageClass is the StorageClass of the PVCs. Default:
	// POCKETCI_K8S_STORAGE_CLASS, else the cluster's default class.
	StorageClass string `json:"storage_class,omitempty"`
	// VolumeSize is what a PVC requests when no size is given (a Kubernetes
	// quantity). Default: POCKETCI_K8S_VOLUME_SIZE, else 1Gi.
	VolumeSize string `json:"volume_size,omitempty"`
	// CombinedLogs accepts a cluster without split log streams and writes
	// all output to stdout instead of failing Logs. Default:
	// POCKETCI_K8S_COMBINED_LOGS=1.
	CombinedLogs *bool `json:"combined_logs,omitempty"`
}

// DriverName is "k8s".
func (Config) DriverName() string { return driverName }

// errSecretWithheld stands for the message of a parser or validator that
// read KubeconfigData: such messages may quote it.
const errSecretWithheld = "the message is withheld, the field is secret"

// Validate checks the fields without contacting the cluster. Its errors
// name the field, never its value.
func (c Config) Validate() error {
	var errs []error
	if c.Kubeconfig != "" && c.KubeconfigData != "" {
		errs = append(errs, errors.New("fields kubeconfig and kubeconfig_data: set one, not both"))
	}
	if c.KubeconfigData != "" {
		if _, err := clientcmd.Load([]byte(c.KubeconfigData)); err != nil {
			errs = append(errs, fmt.Errorf("field kubeconfig_data: not a kubeconfig (%s)", errSecretWithheld))
		}
	}
	if c.K8sNamespace != "" && len(validation.IsDNS1123Label(c.K8sNamespace)) > 0 {
		errs = append(errs, errors.New("field k8s_namespace: not a Kubernetes namespace name (a DNS-1123 label)"))
	}
	if c.StorageClass != "" && len(validation.IsDNS1123Subdomain(c.StorageClass)) > 0 {
		errs = append(errs, errors.New("field storage_class: not a StorageClass name (a DNS-1123 subdomain)"))
	}
	if c.VolumeSize != "" {
		if q, err := resource.ParseQuantity(c.VolumeSize); err != nil || q.Sign() <= 0 {
			errs = append(errs, errors.New("field volume_size: not a positive Kubernetes quantity (such as 1Gi)"))
		}
	}
	return errors.Join(errs...)
}

// String describes the config with KubeconfigData redacted.
func (c Config) String() string {
	combined := "default"
	if c.CombinedLogs != nil {
		combined = fmt.Sprint(*c.CombinedLogs)
	}
	return fmt.Sprintf("k8s.Config{kubeconfig:%q kubeconfig_data:%s context:%q k8s_namespace:%q storage_class:%q volume_size:%q combined_logs:%s}",
		c.Kubeconfig, redacted(c.KubeconfigData), c.Context, c.K8sNamespace, c.StorageClass, c.VolumeSize, combined)
}

// GoString is String, so that %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the secret out of slog output.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

func redacted(s string) string {
	if s == "" {
		return `""`
	}
	return "[redacted]"
}

// settings is a Config resolved against the environment and the defaults.
type settings struct {
	rest         *rest.Config
	k8sNamespace string
	storageClass *string // nil: the cluster's default class
	volumeSize   resource.Quantity
	combinedLogs bool
}

// resolve validates c, fills its empty fields from the environment and the
// defaults, and loads the client configuration.
func (c Config) resolve() (settings, error) {
	if err := c.Validate(); err != nil {
		return settings{}, err
	}
	s := settings{k8sNamespace: firstSet(c.K8sNamespace, os.Getenv(EnvNamespace), "default")}
	if len(validation.IsDNS1123Label(s.k8sNamespace)) > 0 {
		return settings{}, fmt.Errorf("%s: not a Kubernetes namespace name (a DNS-1123 label)", EnvNamespace)
	}
	if sc := firstSet(c.StorageClass, os.Getenv(EnvStorageClass)); sc != "" {
		s.storageClass = &sc
	}
	size := firstSet(c.VolumeSize, os.Getenv(EnvVolumeSize), "1Gi")
	q, err := resource.ParseQuantity(size)
	if err != nil || q.Sign() <= 0 {
		return settings{}, fmt.Errorf("%s: not a positive Kubernetes quantity (such as 1Gi)", EnvVolumeSize)
	}
	s.volumeSize = q
	s.combinedLogs = os.Getenv(EnvCombinedLogs) == "1"
	if c.CombinedLogs != nil {
		s.combinedLogs = *c.CombinedLogs
	}
	if s.rest, err = c.restConfig(); err != nil {
		return settings{}, err
	}
	return s, nil
}

// restConfig loads the client configuration: the inline kubeconfig, the
// kubeconfig file, or (neither set) KUBECONFIG, the in-cluster service
// account, ~/.kube/config, the client-go way.
func (c Config) restConfig() (*rest.Config, error) {
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
	if c.KubeconfigData != "" {
		cc, err := clientcmd.NewClientConfigFromBytes([]byte(c.KubeconfigData))
		if err != nil {
			return nil, fmt.Errorf("field kubeconfig_data: not a kubeconfig (%s)", errSecretWithheld)
		}
		raw, err := cc.RawConfig()
		if err != nil {
			return nil, fmt.Errorf("field kubeconfig_data: not a kubeconfig (%s)", errSecretWithheld)
		}
		name := firstSet(c.Context, raw.CurrentContext)
		if _, ok := raw.Contexts[name]; !ok {
			if c.Context != "" {
				return nil, errors.New("fields kubeconfig_data and context: the context is not in the kubeconfig")
			}
			return nil, errors.New("field kubeconfig_data: its current context is missing or not in the kubeconfig")
		}
		rc, err := clientcmd.NewNonInteractiveClientConfig(raw, name, overrides, nil).ClientConfig()
		if err != nil {
			return nil, withheldConfigError(err)
		}
		return rc, nil
	}
	if c.Kubeconfig == "" && c.Context == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if rc, err := rest.InClusterConfig(); err == nil {
			return rc, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.Kubeconfig
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no usable cluster configuration (set kubeconfig, KUBECONFIG, or run in a pod): %w", err)
	}
	return rc, nil
}

// withheldConfigError says what is wrong with an inline kubeconfig in words
// of its own: client-go's messages may quote the kubeconfig's contents.
func withheldConfigError(err error) error {
	switch {
	case clientcmd.IsEmptyConfig(err):
		return errors.New("field kubeconfig_data: the kubeconfig names no cluster to use")
	}
	return fmt.Errorf("field kubeconfig_data: the kubeconfig is not usable (%s)", errSecretWithheld)
}

// firstSet is the first non-empty string of vals, or "".
func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
