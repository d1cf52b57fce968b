package orchestra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// NewProvider makes the DriverProvider of a driver whose config is C. Its
// UnmarshalConfig decodes with DecodeConfig and then, when C has a
// Validate() error method, validates; NewDriver passes build the config as
// C (the zero C for nil) and refuses a config of another type.
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
	if v, ok := any(c).(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return c, nil
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
		return fmt.Errorf("%w: %s", ErrInvalidConfig, describeDecodeError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the config object", ErrInvalidConfig)
	}
	return nil
}

// describeDecodeError says what is wrong without quoting the value: the
// json package's syntax errors may quote the input.
func describeDecodeError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q: want %s, got a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("not valid JSON (at byte %d)", syntaxErr.Offset)
	default:
		// Unknown fields ("json: unknown field \"x\"") name only the field.
		return err.Error()
	}
}
