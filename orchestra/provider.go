package orchestra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
)

// NewProvider makes the DriverProvider of a driver whose config is C. Its
// UnmarshalConfig decodes with DecodeConfig; both it and NewDriver then
// validate, when C has a Validate() error method (so a config built in Go is
// checked as one decoded from JSON). NewDriver passes build the config as C
// (the zero C for nil) and refuses a config of another type.
func NewProvider[C DriverConfig](name string, build func(ctx context.Context, namespace string, cfg C, logger *slog.Logger) (Driver, error)) DriverProvider {
	return &provider[C]{name: name, build: build}
}

type provider[C DriverConfig] struct {
	name  string
	build func(context.Context, string, C, *slog.Logger) (Driver, error)
}

var _ DriverProvider = (*provider[DriverConfig])(nil)

func (p *provider[C]) Name() string { return p.name }

func (p *provider[C]) EmptyConfig() DriverConfig {
	var c C
	return c
}

func (p *provider[C]) UnmarshalConfig(raw json.RawMessage) (DriverConfig, error) {
	var c C
	if err := DecodeConfig(raw, &c); err != nil {
		return nil, err
	}
	if err := validate(c); err != nil {
		return nil, err
	}
	return c, nil
}

// validate runs c's Validate, when it has one.
func validate(c any) error {
	if v, ok := c.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

func (p *provider[C]) NewDriver(ctx context.Context, namespace string, cfg DriverConfig, logger *slog.Logger) (Driver, error) {
	var c C
	if cfg != nil {
		typed, ok := cfg.(C)
		if !ok {
			return nil, fmt.Errorf("%w: driver %q got a config of type %T (for %q)", ErrInvalidConfig, p.name, cfg, cfg.DriverName())
		}
		c = typed
	}
	if err := validate(c); err != nil {
		return nil, fmt.Errorf("driver %q: %w", p.name, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	return p.build(ctx, namespace, c, logger)
}

// DecodeConfig decodes raw JSON into the struct v points to, strictly: an
// unknown field, a value of the wrong type or data after the object is an
// error that wraps ErrInvalidConfig and names the field, never its value.
// Empty raw and null leave v as it is (the defaults).
func DecodeConfig(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, describeDecodeError(err, raw, v))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the config object", ErrInvalidConfig)
	}
	return nil
}

// describeDecodeError says what is wrong without quoting the value: the
// json package's syntax errors, and a field's own UnmarshalJSON, may quote
// the input.
func describeDecodeError(err error, raw json.RawMessage, v any) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q: want %s, got a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("not valid JSON (at byte %d)", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ") // names only the field
	}
	if field := failingField(raw, v); field != "" {
		return fmt.Sprintf("field %q: the value is not valid for it (not shown: a config may hold secrets)", field)
	}
	return "the config could not be decoded (the reason is not shown: it may quote a secret)"
}

// failingField finds the top-level field of raw whose value does not decode
// into a fresh value of v's type.
func failingField(raw json.RawMessage, v any) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return ""
	}
	t := reflect.TypeOf(v).Elem()
	for name, value := range fields {
		one, _ := json.Marshal(map[string]json.RawMessage{name: value})
		if json.Unmarshal(one, reflect.New(t).Interface()) != nil {
			return name
		}
	}
	return ""
}
