package docker

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/docker/docker/client"
	"github.com/docker/go-connections/tlsconfig"
)

// Environment variables the driver reads for the fields a Config leaves
// empty: the Docker CLI's own (see client.FromEnv).
const (
	// EnvHost is the Engine address (DOCKER_HOST).
	EnvHost = client.EnvOverrideHost
	// EnvCertPath is the directory of ca.pem, cert.pem and key.pem
	// (DOCKER_CERT_PATH).
	EnvCertPath = client.EnvOverrideCertPath
	// EnvTLSVerify, when not empty, verifies the Engine's certificate
	// (DOCKER_TLS_VERIFY).
	EnvTLSVerify = client.EnvTLSVerify
	// EnvAPIVersion pins the API version instead of negotiating it
	// (DOCKER_API_VERSION).
	EnvAPIVersion = client.EnvOverrideAPIVersion
)

// Config is one driver instance's configuration: which Docker Engine it
// talks to and how. Every field is optional; an empty one takes its default
// from the environment (the DOCKER_* variables the docker CLI reads), then
// the client's built-in default. No field is a secret: the TLS key stays in
// its file.
type Config struct {
	// Host is the Engine address: unix:///path, tcp://host:port,
	// http://host:port or https://host:port. Default: DOCKER_HOST, else
	// unix:///var/run/docker.sock.
	Host string `json:"host,omitempty"`
	// CertPath is a directory holding ca.pem, cert.pem and key.pem for a
	// TLS connection. Default: DOCKER_CERT_PATH; empty means no TLS client
	// certificate.
	CertPath string `json:"cert_path,omitempty"`
	// TLSVerify checks the Engine's certificate against ca.pem (it needs a
	// cert path). Default: DOCKER_TLS_VERIFY set to anything non-empty.
	TLSVerify *bool `json:"tls_verify,omitempty"`
	// APIVersion pins the Engine API version ("1.41"). Default:
	// DOCKER_API_VERSION, else negotiated with the Engine.
	APIVersion string `json:"api_version,omitempty"`
}

// DriverName is "docker".
func (Config) DriverName() string { return driverName }

// hostSchemes are the Engine address schemes the client can dial.
var hostSchemes = map[string]bool{"unix": true, "tcp": true, "http": true, "https": true, "npipe": true}

var apiVersionPattern = regexp.MustCompile(`^v?[0-9]+\.[0-9]+$`)

// Validate checks the fields without contacting the Engine. Its errors name
// the field, never its value.
func (c Config) Validate() error {
	var errs []error
	if c.Host != "" {
		if err := checkHost(c.Host); err != nil {
			errs = append(errs, fmt.Errorf("field host: %w", err))
		}
	}
	if c.CertPath != "" && hasControl(c.CertPath) {
		errs = append(errs, errors.New("field cert_path: contains control characters"))
	}
	if c.APIVersion != "" && !apiVersionPattern.MatchString(c.APIVersion) {
		errs = append(errs, errors.New("field api_version: not an API version such as 1.41"))
	}
	return errors.Join(errs...)
}

// checkHost reports what is wrong with an Engine address, without quoting
// it.
func checkHost(host string) error {
	scheme, addr, ok := strings.Cut(host, "://")
	switch {
	case !ok || addr == "":
		return errors.New("not an Engine address such as unix:///var/run/docker.sock or tcp://host:2376")
	case scheme == "ssh":
		return errors.New("ssh:// is not supported (forward the Engine's socket, e.g. ssh -L, and give its unix:// or tcp:// address)")
	case !hostSchemes[scheme]:
		return errors.New("unknown scheme (want unix, tcp, http, https or npipe)")
	case hasControl(addr):
		return errors.New("contains control characters")
	case scheme == "unix" && !filepath.IsAbs(addr):
		return errors.New("a unix socket path must be absolute (unix:///path)")
	}
	if _, err := client.ParseHostURL(host); err != nil {
		// The client's message quotes the address: keep it out.
		return errors.New("not a valid Engine address")
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// settings is a Config resolved against the environment.
type settings struct {
	host       string // empty: the client's default
	certPath   string
	tlsVerify  bool
	apiVersion string
}

// resolve validates c and fills its empty fields from the environment.
// A bad value from the environment is an error naming the variable.
func (c Config) resolve() (settings, error) {
	if err := c.Validate(); err != nil {
		return settings{}, err
	}
	s := settings{
		host:       firstSet(c.Host, os.Getenv(EnvHost)),
		certPath:   firstSet(c.CertPath, os.Getenv(EnvCertPath)),
		tlsVerify:  os.Getenv(EnvTLSVerify) != "",
		apiVersion: firstSet(c.APIVersion, os.Getenv(EnvAPIVersion)),
	}
	if c.TLSVerify != nil {
		if *c.TLSVerify && s.certPath == "" {
			return settings{}, fmt.Errorf("field tls_verify: needs cert_path (or %s)", EnvCertPath)
		}
		s.tlsVerify = *c.TLSVerify
	}
	if c.Host == "" && s.host != "" {
		if err := checkHost(s.host); err != nil {
			return settings{}, fmt.Errorf("%s: %w", EnvHost, err)
		}
	}
	return s, nil
}

func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// newClient makes an Engine client for s. It does not contact the Engine.
func newClient(s settings) (*client.Client, error) {
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if s.certPath != "" {
		tlsc, err := tlsconfig.Client(tlsconfig.Options{
			CAFile:             filepath.Join(s.certPath, "ca.pem"),
			CertFile:           filepath.Join(s.certPath, "cert.pem"),
			KeyFile:            filepath.Join(s.certPath, "key.pem"),
			InsecureSkipVerify: !s.tlsVerify,
		})
		if err != nil {
			return nil, fmt.Errorf("cert_path: loading the TLS files: %w", err)
		}
		opts = append(opts, client.WithHTTPClient(&http.Client{
			Transport:     &http.Transport{TLSClientConfig: tlsc},
			CheckRedirect: client.CheckRedirect,
		}))
	}
	if s.host != "" {
		opts = append(opts, client.WithHost(s.host))
	}
	if s.apiVersion != "" {
		opts = append(opts, client.WithVersion(s.apiVersion))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}
