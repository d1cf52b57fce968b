package wire

import (
	"encoding/json"
	"errors"
	"strings"
)

// A driver config may carry secrets (tokens, kubeconfig contents). The host
// never logs it, and keeps its strings out of every error that comes back
// from the plugin with it, whatever the plugin put in the message.

// minSecret is the shortest config string kept out of errors: shorter ones
// ("true", "json", a port) would mangle messages without hiding anything.
const minSecret = 6

// secretsOf returns the string values in a JSON config, longest first.
func secretsOf(config json.RawMessage) []string {
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
	return out
}

// redact keeps the strings of config out of err's message.
func redact(err error, config json.RawMessage) error {
	return redactStrings(err, secretsOf(config))
}

// Redact replaces every secret in s with "[redacted]".
func Redact(s string, secrets []string) string {
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// SecretsOf is secretsOf, for the host's log filter.
func SecretsOf(config json.RawMessage) []string { return secretsOf(config) }

// redactStrings keeps secrets out of err's message; the error still
// unwraps to what err did.
func redactStrings(err error, secrets []string) error {
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
