package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// secretMarker stands in for a credential inside an inline kubeconfig.
const secretMarker = "s3cr3t-marker-5c1f9e"

// TestUnmarshalConfig: the provider decodes the JSON config strictly, and
// its errors name the field without quoting the value.
func TestUnmarshalConfig(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Config
		errWant string // "" when it must decode
	}{
		{"empty is the defaults", ``, Config{}, ""},
		{"null is the defaults", `null`, Config{}, ""},
		{"every field", `{"kubeconfig":"/k","context":"c","k8s_namespace":"ci","storage_class":"fast.ssd","volume_size":"2Gi","combined_logs":true}`,
			Config{Kubeconfig: "/k", Context: "c", K8sNamespace: "ci", StorageClass: "fast.ssd", VolumeSize: "2Gi", CombinedLogs: ptr(true)}, ""},
		{"unknown field", `{"namespace":"` + secretMarker + `"}`, Config{}, `"namespace"`},
		{"wrong type", `{"volume_size":1}`, Config{}, "volume_size"},
		{"both kubeconfigs", `{"kubeconfig":"/k","kubeconfig_data":"` + secretMarker + `"}`, Config{}, "kubeconfig_data"},
		{"inline kubeconfig that is no kubeconfig", `{"kubeconfig_data":"{` + secretMarker + `"}`, Config{}, "kubeconfig_data"},
		{"bad namespace", `{"k8s_namespace":"Not_` + secretMarker + `"}`, Config{}, "k8s_namespace"},
		{"bad storage class", `{"storage_class":"` + secretMarker + `/x"}`, Config{}, "storage_class"},
		{"bad volume size", `{"volume_size":"` + secretMarker + `"}`, Config{}, "volume_size"},
		{"zero volume size", `{"volume_size":"0"}`, Config{}, "volume_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Provider().UnmarshalConfig([]byte(tc.raw))
			if tc.errWant != "" {
				if err == nil || !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.errWant) {
					t.Fatalf("error %v: want one wrapping ErrInvalidConfig naming %s", err, tc.errWant)
				}
				if strings.Contains(err.Error(), secretMarker) {
					t.Fatalf("the error quotes the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.(Config).String() != tc.want.String() {
				t.Fatalf("decoded %v, want %v", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestConfigStringRedacts: printing or logging a config does not show the
// inline kubeconfig.
func TestConfigStringRedacts(t *testing.T) {
	cfg := Config{KubeconfigData: "token: " + secretMarker, K8sNamespace: "ci"}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg), logged.String()} {
		if strings.Contains(s, secretMarker) {
			t.Errorf("the secret shows: %s", s)
		}
		if !strings.Contains(s, "ci") {
			t.Errorf("the config's other fields do not show: %s", s)
		}
	}
}

// syncBuffer is a bytes.Buffer for a logger written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// kubeconfigWithSecret is a kubeconfig for server whose user's token and
// password are the marker, with context "ctx" current unless current says
// otherwise.
func kubeconfigWithSecret(server, current string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: ` + server + `
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: ` + secretMarker + `
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ` + current + `
`
}

// TestInlineKubeconfigSecretNotLeaked: for bad inline kubeconfigs (not
// YAML, naming a context that is not there, or pointing at a cluster that
// does not answer), neither the errors nor the driver's log (debug level)
// carry the credentials the kubeconfig holds.
func TestInlineKubeconfigSecretNotLeaked(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		newFail bool // New itself fails
	}{
		{"not YAML", Config{KubeconfigData: "token: " + secretMarker + "\n  : ][ {"}, true},
		{"a kubeconfig of another shape", Config{KubeconfigData: "users: " + secretMarker}, true},
		{"missing current context", Config{KubeconfigData: kubeconfigWithSecret("https://127.0.0.1:1", secretMarker)}, true},
		{"missing context override", Config{KubeconfigData: kubeconfigWithSecret("https://127.0.0.1:1", "ctx"), Context: "nope"}, true},
		{"unreachable cluster", Config{KubeconfigData: kubeconfigWithSecret("https://127.0.0.1:1", "ctx")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logged syncBuffer
			logger := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
			errs := secretProbe(t, tc.cfg, logger, tc.newFail)
			t.Logf("errors: %v", errs)
			for _, err := range errs {
				if err != nil && strings.Contains(err.Error(), secretMarker) {
					t.Errorf("an error carries the secret: %v", err)
				}
				if err != nil && strings.Contains(fmt.Sprintf("%#v", err), secretMarker) {
					t.Errorf("an error's Go syntax carries the secret: %#v", err)
				}
			}
			if strings.Contains(logged.String(), secretMarker) {
				t.Errorf("the log carries the secret:\n%s", logged.String())
			}
		})
	}
}

// secretProbe makes a driver with cfg and, when that works, uses it against
// a cluster that does not answer; it returns every error it got, having
// checked that each operation failed.
func secretProbe(t *testing.T, cfg Config, logger *slog.Logger, newFail bool) []error {
	t.Helper()
	errs := []error{cfg.Validate()}
	_, err := Provider().UnmarshalConfig([]byte(fmt.Sprintf(`{"kubeconfig_data":%q,"context":%q}`, cfg.KubeconfigData, cfg.Context)))
	errs = append(errs, err)
	d, err := Provider().NewDriver(context.Background(), "secret", cfg, logger)
	errs = append(errs, err)
	if newFail {
		if err == nil {
			_ = d.Close()
			t.Fatal("New accepted the config")
		}
		return errs
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = d.RunContainer(ctx, orchestra.Task{ID: "t", Image: testImage, Command: []string{"true"}})
	errs = append(errs, err)
	_, err = d.CreateVolume(ctx, "v", 0)
	errs = append(errs, err)
	_, err = d.GetContainer(ctx, "secret-t")
	errs = append(errs, err)
	errs = append(errs, d.Close())
	for i, err := range errs[3:] {
		if err == nil {
			t.Errorf("operation %d succeeded against a cluster that does not answer", i)
		}
	}
	return errs
}
