package docker

import (
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/client"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestUnmarshalConfig decodes configs as a host or pipeline would give
// them: good ones become a Config, bad ones an ErrInvalidConfig naming the
// field and never quoting the value.
func TestUnmarshalConfig(t *testing.T) {
	const secret = "s3cr3t-value"
	tests := []struct {
		name  string
		raw   string
		want  Config
		field string // "" when it must decode
	}{
		{name: "empty", raw: ``},
		{name: "null", raw: `null`},
		{name: "unix host", raw: `{"host":"unix:///run/other.sock"}`, want: Config{Host: "unix:///run/other.sock"}},
		{name: "tcp host and version", raw: `{"host":"tcp://10.0.0.1:2376","api_version":"1.41"}`,
			want: Config{Host: "tcp://10.0.0.1:2376", APIVersion: "1.41"}},
		{name: "tls", raw: `{"cert_path":"/etc/docker/certs","tls_verify":true}`,
			want: Config{CertPath: "/etc/docker/certs", TLSVerify: ptr(true)}},
		{name: "no scheme", raw: `{"host":"` + secret + `"}`, field: "host"},
		{name: "unknown scheme", raw: `{"host":"ftp://` + secret + `"}`, field: "host"},
		{name: "ssh", raw: `{"host":"ssh://` + secret + `@example.com"}`, field: "host"},
		{name: "relative unix path", raw: `{"host":"unix://` + secret + `.sock"}`, field: "host"},
		{name: "empty address", raw: `{"host":"tcp://"}`, field: "host"},
		{name: "control character", raw: `{"host":"tcp://` + secret + `\n:1"}`, field: "host"},
		{name: "bad api version", raw: `{"api_version":"` + secret + `"}`, field: "api_version"},
		{name: "bad cert path", raw: `{"cert_path":"/` + secret + `\u0007"}`, field: "cert_path"},
		{name: "wrong type", raw: `{"host":7}`, field: "host"},
		{name: "unknown field", raw: `{"hots":"` + secret + `"}`, field: "hots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Provider().UnmarshalConfig([]byte(tt.raw))
			if tt.field == "" {
				if err != nil {
					t.Fatalf("UnmarshalConfig(%s): %v", tt.raw, err)
				}
				cfg := got.(Config)
				if cfg.Host != tt.want.Host || cfg.CertPath != tt.want.CertPath || cfg.APIVersion != tt.want.APIVersion ||
					(cfg.TLSVerify == nil) != (tt.want.TLSVerify == nil) || (cfg.TLSVerify != nil && *cfg.TLSVerify != *tt.want.TLSVerify) {
					t.Fatalf("UnmarshalConfig(%s) = %+v, want %+v", tt.raw, cfg, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("UnmarshalConfig(%s) accepted it: %+v", tt.raw, got)
			}
			if !errors.Is(err, orchestra.ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error does not name field %q: %v", tt.field, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error quotes the value: %v", err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestNewRefusesBadConfig checks that a config given straight to the
// provider (not decoded) is validated too, and that a bad value taken from
// the environment names the variable.
func TestNewRefusesBadConfig(t *testing.T) {
	ctx := t.Context()
	_, err := Provider().NewDriver(ctx, "ns", Config{Host: "nonsense"}, nil)
	if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), "host") || strings.Contains(err.Error(), "nonsense") {
		t.Errorf("NewDriver with a bad host: %v, want ErrInvalidConfig naming host without its value", err)
	}
	_, err = Provider().NewDriver(ctx, "ns", Config{TLSVerify: ptr(true)}, nil)
	if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), "tls_verify") {
		t.Errorf("NewDriver with tls_verify and no cert path: %v, want ErrInvalidConfig naming tls_verify", err)
	}
	t.Setenv(EnvHost, "nonsense-from-env")
	_, err = Provider().NewDriver(ctx, "ns", nil, nil)
	if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), EnvHost) || strings.Contains(err.Error(), "nonsense") {
		t.Errorf("NewDriver with a bad %s: %v, want ErrInvalidConfig naming the variable without its value", EnvHost, err)
	}
	// The config's host wins over the environment's.
	d, err := New("ns", Config{Host: client.DefaultDockerHost}, nil)
	if err != nil {
		t.Fatalf("New with an explicit host and a bad %s: %v", EnvHost, err)
	}
	if got := d.client.DaemonHost(); got != client.DefaultDockerHost {
		t.Errorf("client host %q, want %q", got, client.DefaultDockerHost)
	}
}

// TestConfigDefaultsFromEnvironment checks that empty fields take the
// DOCKER_* variables.
func TestConfigDefaultsFromEnvironment(t *testing.T) {
	t.Setenv(EnvHost, "tcp://127.0.0.1:1")
	t.Setenv(EnvAPIVersion, "1.40")
	d, err := New("ns", Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.client.DaemonHost(); got != "tcp://127.0.0.1:1" {
		t.Errorf("client host %q, want the environment's", got)
	}
	if got := d.client.ClientVersion(); got != "1.40" {
		t.Errorf("client API version %q, want the environment's 1.40", got)
	}
	d, err = New("ns", Config{Host: "unix:///nowhere.sock", APIVersion: "1.41"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.client.DaemonHost() != "unix:///nowhere.sock" || d.client.ClientVersion() != "1.41" {
		t.Errorf("config fields did not win over the environment: host %q version %q", d.client.DaemonHost(), d.client.ClientVersion())
	}
}
