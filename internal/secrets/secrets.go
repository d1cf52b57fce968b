// Package secrets keeps the strings of a driver config (tokens, kubeconfig
// contents) out of text: the wire client keeps them out of the errors a
// plugin returns, and the host out of a plugin's log records and stderr
// lines, whatever the plugin put there. Neither ever prints a config.
package secrets

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
)

// minSecret is the shortest config string kept out of errors: shorter ones
// ("true", "json", a port) would mangle messages without hiding anything.
const minSecret = 6

// Of returns the string values in a JSON config, longest first (so
// that a secret inside another is not left in part).
func Of(config json.RawMessage) []string {
	var v any
	if len(config) == 0 || json.Unmarshal(config, &v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) >= minSecret {
				out = append(out, v)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// Redact replaces every secret in s with "[redacted]".
func Redact(s string, secrets []string) string {
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// Err keeps secrets out of err's message; the error still unwraps to what
// err did.
func Err(err error, secrets []string) error {
	if err == nil || len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	clean := Redact(msg, secrets)
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return errors.Unwrap(e.err) }
