package orchestra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"
)

// DriverConfig is a driver's typed configuration, set per server and per
// pipeline. DriverName says which driver it belongs to.
type DriverConfig interface {
	DriverName() string
}

// DriverProvider builds the drivers of one kind.
type DriverProvider interface {
	// Name is the driver's name ("docker", "native", …).
	Name() string
	// NewDriver creates a driver for namespace with cfg, which may be nil
	// (the provider's defaults).
	NewDriver(ctx context.Context, namespace string, cfg DriverConfig, logger *slog.Logger) (Driver, error)
	// UnmarshalConfig decodes raw JSON into the driver's typed config. An
	// error wraps ErrInvalidConfig and names the field, never its value.
	UnmarshalConfig(raw json.RawMessage) (DriverConfig, error)
	// EmptyConfig is the config with every setting at its default.
	EmptyConfig() DriverConfig
}

// Metrics is what a DriverRegistry records to; the default records nothing.
type Metrics interface {
	CounterAdd(name string, delta float64, attributes map[string]string)
	GaugeSet(name string, value float64, attributes map[string]string)
	HistogramObserve(name string, value float64, attributes map[string]string)
}

type noMetrics struct{}

func (noMetrics) CounterAdd(string, float64, map[string]string)       {}
func (noMetrics) GaugeSet(string, float64, map[string]string)         {}
func (noMetrics) HistogramObserve(string, float64, map[string]string) {}

// DriverRegistry maps driver names to their providers. The plugin host
// hands out a provider per plugin, so plugins and drivers compiled in sit in
// one registry.
type DriverRegistry struct {
	byName  map[string]DriverProvider
	metrics Metrics
}

// NewDriverRegistry builds a registry of providers. Two providers of one
// name are a programming error: it panics, naming the driver.
func NewDriverRegistry(providers []DriverProvider) *DriverRegistry {
	byName := make(map[string]DriverProvider, len(providers))
	for _, p := range providers {
		name := p.Name()
		if _, dup := byName[name]; dup {
			panic(fmt.Sprintf("orchestra: driver provider %q registered twice", name))
		}
		byName[name] = p
	}
	return &DriverRegistry{byName: byName, metrics: noMetrics{}}
}

// SetMetrics sets what CreateDriver records to; nil records nothing.
func (r *DriverRegistry) SetMetrics(m Metrics) {
	if m == nil {
		m = noMetrics{}
	}
	r.metrics = m
}

// Provider returns the provider registered under name.
func (r *DriverRegistry) Provider(name string) (DriverProvider, bool) {
	p, ok := r.byName[name]
	return p, ok
}

// CreateDriver creates a driver of the named kind for namespace; a nil cfg
// is the provider's EmptyConfig. It records
// pocketci_driver_create_seconds{driver, result}.
func (r *DriverRegistry) CreateDriver(ctx context.Context, name, namespace string, cfg DriverConfig, logger *slog.Logger) (Driver, error) {
	p, ok := r.byName[name]
	if !ok {
		return nil, fmt.Errorf("unknown driver %q", name)
	}
	if cfg == nil {
		cfg = p.EmptyConfig()
	}
	start := time.Now()
	d, err := p.NewDriver(ctx, namespace, cfg, logger)
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.metrics.HistogramObserve("pocketci_driver_create_seconds", time.Since(start).Seconds(),
		map[string]string{"driver": name, "result": result})
	if err != nil {
		return nil, fmt.Errorf("create %q driver: %w", name, err)
	}
	return d, nil
}

// UnmarshalConfig decodes raw JSON into the named driver's typed config.
func (r *DriverRegistry) UnmarshalConfig(name string, raw json.RawMessage) (DriverConfig, error) {
	p, ok := r.byName[name]
	if !ok {
		return nil, fmt.Errorf("unknown driver %q", name)
	}
	cfg, err := p.UnmarshalConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("unmarshal %q driver config: %w", name, err)
	}
	return cfg, nil
}

// Names returns the registered driver names, sorted.
func (r *DriverRegistry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for name := range r.byName {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// IsDriverAllowed reports, as an error, whether driver is in allowed; "*"
// allows every driver.
func IsDriverAllowed(driver string, allowed []string) error {
	if driver == "" {
		return errors.New("driver name is required")
	}
	if slices.Contains(allowed, "*") || slices.Contains(allowed, driver) {
		return nil
	}
	return fmt.Errorf("driver %q is not allowed on this server. Allowed drivers: %s", driver, strings.Join(allowed, ", "))
}
