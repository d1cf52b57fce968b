package orchestra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Greeting string   `json:"greeting"`
	Timeout  Duration `json:"timeout"`
	Token    string   `json:"token"`
}

func (testConfig) DriverName() string { return "test" }

func (c testConfig) Validate() error {
	if c.Greeting == "shout" {
		return errors.New("greeting: must not shout")
	}
	return nil
}

type otherConfig struct{}

func (otherConfig) DriverName() string { return "other" }

// testDriver is a Driver whose Name says which config built it.
type testDriver struct {
	Driver
	name string
}

func (d testDriver) Name() string { return d.name }

var testProvider = NewProvider("test", func(_ context.Context, ns string, cfg testConfig, _ *slog.Logger) (Driver, error) {
	return testDriver{name: ns + ":" + cfg.Greeting + ":" + cfg.Timeout.Std().String()}, nil
})

type metricsRecorder struct{ observed []string }

func (m *metricsRecorder) CounterAdd(string, float64, map[string]string) {}
func (m *metricsRecorder) GaugeSet(string, float64, map[string]string)   {}
func (m *metricsRecorder) HistogramObserve(name string, _ float64, attrs map[string]string) {
	m.observed = append(m.observed, name+" "+attrs["driver"]+" "+attrs["result"])
}

func TestRegistry(t *testing.T) {
	r := NewDriverRegistry([]DriverProvider{testProvider})
	m := &metricsRecorder{}
	r.SetMetrics(m)
	ctx := context.Background()
	d, err := r.CreateDriver(ctx, "test", "ns", nil, nil)
	if err != nil || d.Name() != "ns::0s" {
		t.Fatalf("CreateDriver with a nil config: %v, %v; want the empty config's driver", d, err)
	}
	cfg, err := r.UnmarshalConfig("test", json.RawMessage(`{"greeting":"hi","timeout":"5s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d, err = r.CreateDriver(ctx, "test", "ns", cfg, nil); err != nil || d.Name() != "ns:hi:5s" {
		t.Fatalf("CreateDriver with a config: %v, %v", d, err)
	}
	if _, err := r.CreateDriver(ctx, "test", "ns", otherConfig{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("a config of another driver: %v, want ErrInvalidConfig", err)
	}
	if _, err := r.CreateDriver(ctx, "nope", "ns", nil, nil); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("an unknown driver: %v", err)
	}
	if got := fmt.Sprint(m.observed); got != "[pocketci_driver_create_seconds test ok pocketci_driver_create_seconds test ok pocketci_driver_create_seconds test error]" {
		t.Fatalf("metrics: %s", got)
	}
	if names := r.Names(); len(names) != 1 || names[0] != "test" {
		t.Fatalf("Names = %v", names)
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), `"test"`) {
			t.Fatalf("two providers of one name: panic %v, want one naming the driver", p)
		}
	}()
	NewDriverRegistry([]DriverProvider{testProvider, testProvider})
}

func TestProviderConfig(t *testing.T) {
	const secret = "s3cr3t-value"
	tests := []struct {
		name, raw string
		ok        bool
		names     string
	}{
		{"empty", ``, true, ""},
		{"null", `null`, true, ""},
		{"known fields", `{"greeting":"hi","timeout":1000000000}`, true, ""},
		{"unknown field", `{"token":"` + secret + `","colour":"` + secret + `"}`, false, "colour"},
		{"wrong type", `{"greeting":["` + secret + `"]}`, false, "greeting"},
		{"bad duration", `{"timeout":"` + secret + `"}`, false, `field "timeout"`},
		{"refused by Validate", `{"greeting":"shout","token":"` + secret + `"}`, false, "greeting"},
		{"two objects", `{"greeting":"a"} {"greeting":"` + secret + `"}`, false, "after the config"},
		{"not JSON", `{"greeting": ` + secret, false, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testProvider.UnmarshalConfig(json.RawMessage(tt.raw))
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.names) || strings.Contains(err.Error(), secret) {
				t.Fatalf("UnmarshalConfig(%s) = %v; want ErrInvalidConfig naming %q without the value", tt.raw, err, tt.names)
			}
		})
	}
	if _, err := testProvider.NewDriver(context.Background(), "ns", testConfig{Greeting: "shout"}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewDriver with a config built in Go that Validate refuses: %v", err)
	}
}

func TestIsDriverAllowed(t *testing.T) {
	for _, tt := range []struct {
		driver  string
		allowed []string
		ok      bool
	}{
		{"docker", []string{"*"}, true},
		{"docker", []string{"docker", "native"}, true},
		{"qemu", []string{"docker", "native"}, false},
		{"", []string{"*"}, false},
	} {
		if err := IsDriverAllowed(tt.driver, tt.allowed); (err == nil) != tt.ok {
			t.Errorf("IsDriverAllowed(%q, %v) = %v", tt.driver, tt.allowed, err)
		}
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	for raw, want := range map[string]time.Duration{`"5m"`: 5 * time.Minute, `1500`: 1500} {
		if err := json.Unmarshal([]byte(raw), &d); err != nil || d.Std() != want {
			t.Errorf("Duration from %s = %v, %v; want %v", raw, d.Std(), err, want)
		}
	}
	if b, _ := json.Marshal(Duration(90 * time.Second)); string(b) != `"1m30s"` {
		t.Errorf("Duration marshals to %s", b)
	}
	if err := json.Unmarshal([]byte(`true`), &d); err == nil {
		t.Error("a boolean was taken as a duration")
	}
}
