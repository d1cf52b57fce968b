// Package conformance is the behaviour every orchestra driver must show. Run
// it from a Go test against a driver in process, or against a plugin binary
// through package host; `orchestra conformance` runs the same cases from the
// command line.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// Options configures a conformance run.
type Options struct {
	// New creates a driver instance for namespace. Every case gets its own
	// fresh namespace.
	New func(namespace string) (orchestra.Driver, error)
	// Image is the image tasks run in. Defaults to "busybox".
	Image string
	// Timeout bounds each case. Defaults to 2 minutes; a VM driver wants more.
	Timeout time.Duration
	// Leaks, when set, is called after a case closed its driver and returns a
	// description of every resource of namespace that is still there (a
	// process, container, volume, directory). Empty means nothing leaked.
	Leaks func(namespace string) ([]string, error)
	// Run, when set, selects the cases whose name matches it.
	Run *regexp.Regexp
	// Skip names cases the platform is known to fail, each with the reason
	// (a documented limitation, such as a runtime that loses log lines).
	// They are not run and report skipped with that reason.
	Skip map[string]string
}

// Case is one behaviour a driver must show.
type Case struct {
	Name string
	// Fn exercises the driver and returns an error describing the first
	// failed expectation.
	Fn func(ctx context.Context, env *Env) error
}

// Env is what a case gets: the options, its own namespace and a driver in it.
type Env struct {
	Options   Options
	Namespace string
	Driver    orchestra.Driver
}

// Result is the outcome of one case. A skipped case (it needs a capability
// the driver lacks, such as orchestra.SandboxDriver) has Skipped set, Passed
// unset, and the reason in Error.
type Result struct {
	Name     string        `json:"name"`
	Passed   bool          `json:"passed"`
	Skipped  bool          `json:"skipped,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// skipError is what a case returns when the driver lacks what it needs.
type skipError struct{ reason string }

func (e *skipError) Error() string { return "skipped: " + e.reason }

// skip ends a case as skipped, with reason.
func skip(reason string) error { return &skipError{reason: reason} }

// skipped returns the reason when err (or what the leak probe added to it)
// is a skip and nothing else went wrong.
func skipped(err error) (string, bool) {
	var s *skipError
	if errors.As(err, &s) && err.Error() == s.Error() {
		return s.reason, true
	}
	return "", false
}

// closeGrace is how long a case that ran out of time gets to return after
// its ctx was cancelled, before the driver is closed under it anyway.
const closeGrace = 30 * time.Second

// Run runs every case as a subtest of t.
func Run(t *testing.T, opts Options) {
	t.Helper()
	opts = opts.withDefaults()
	for _, c := range Cases() {
		if opts.Run != nil && !opts.Run.MatchString(c.Name) {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			if reason, ok := opts.Skip[c.Name]; ok {
				t.Skip("known limitation: " + reason)
			}
			err := runCase(t.Context(), opts, c)
			if reason, ok := skipped(err); ok {
				t.Skip(reason)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// RunAll runs every selected case outside of `go test` and returns one Result
// per case, in order. report, when not nil, is called after each case.
func RunAll(ctx context.Context, opts Options, report func(Result)) []Result {
	opts = opts.withDefaults()
	var results []Result
	for _, c := range Cases() {
		if opts.Run != nil && !opts.Run.MatchString(c.Name) {
			continue
		}
		if reason, ok := opts.Skip[c.Name]; ok {
			r := Result{Name: c.Name, Skipped: true, Error: "known limitation: " + reason}
			if report != nil {
				report(r)
			}
			results = append(results, r)
			continue
		}
		start := time.Now()
		err := runCase(ctx, opts, c)
		r := Result{Name: c.Name, Passed: err == nil, Duration: time.Since(start)}
		if reason, ok := skipped(err); ok {
			r.Skipped, r.Error = true, reason
		} else if err != nil {
			r.Error = err.Error()
		}
		if report != nil {
			report(r)
		}
		results = append(results, r)
	}
	return results
}

func (o Options) withDefaults() Options {
	if o.Image == "" {
		o.Image = "busybox"
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	return o
}

// runCase gives the case a fresh namespace and driver, runs it under the
// timeout, closes the driver, and asks the leak probe, also after a case
// that failed. A case that runs out of time has its ctx cancelled and is
// waited for (up to closeGrace) before the driver is closed.
func runCase(ctx context.Context, opts Options, c Case) (err error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	namespace := newNamespace(c.Name)
	driver, err := opts.New(namespace)
	if err != nil {
		return fmt.Errorf("new driver for namespace %q: %w", namespace, err)
	}
	defer func() {
		if cerr := driver.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close driver: %w", cerr))
		}
		if opts.Leaks == nil {
			return
		}
		left, lerr := opts.Leaks(namespace)
		if lerr != nil {
			err = errors.Join(err, fmt.Errorf("leak probe: %w", lerr))
		} else if len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("after Close, namespace %q still has: %v", namespace, left))
		}
	}()
	env := &Env{Options: opts, Namespace: namespace, Driver: driver}
	done := make(chan error, 1)
	go func() { done <- c.Fn(ctx, env) }()
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
	}
	err = fmt.Errorf("case %q did not finish within %s: %w", c.Name, opts.Timeout, ctx.Err())
	select {
	case <-done:
	case <-time.After(closeGrace):
		err = fmt.Errorf("%w; it still ran %s after its ctx was cancelled, so the driver was closed under it", err, closeGrace)
	}
	return err
}

// maxSlug bounds the case-name part of a namespace so that the whole stays
// short: "ct-" + slug + "-" + 6 hex digits is at most 34 characters.
const maxSlug = 24

// newNamespace returns a fresh namespace for a case: "ct-<slug>-<6 hex>",
// lowercase [a-z0-9-] only, valid as a directory name, a Docker name prefix
// and a label value on every platform.
func newNamespace(caseName string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(caseName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	slug := b.String()
	if len(slug) > maxSlug {
		slug = slug[:maxSlug]
	}
	slug = strings.Trim(slug, "-")
	if slug == "" {
		slug = "case"
	}
	var buf [3]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails on supported platforms.
	return "ct-" + slug + "-" + hex.EncodeToString(buf[:])
}
