package orchestra

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration in a config: JSON "5m", "10s", or a number of
// nanoseconds in, a string such as "5m0s" out.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("unmarshal duration: %w", err)
	}
	switch v := v.(type) {
	case string:
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("parse duration: %w", err)
		}
		*d = Duration(parsed)
	case float64:
		*d = Duration(time.Duration(v))
	default:
		return fmt.Errorf("invalid duration type %T", v)
	}
	return nil
}

// Std is d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
