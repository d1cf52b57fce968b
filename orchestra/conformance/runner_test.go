package conformance

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// recordingDriver is a driver that runs nothing and records Close.
type recordingDriver struct {
	closed     atomic.Int32
	caseDoneAt atomic.Bool // whether the case had returned when Close ran
	caseDone   *atomic.Bool
}

func (d *recordingDriver) Close() error {
	d.closed.Add(1)
	if d.caseDone != nil {
		d.caseDoneAt.Store(d.caseDone.Load())
	}
	return nil
}

func (d *recordingDriver) CreateVolume(context.Context, string, int) (orchestra.Volume, error) {
	return nil, errors.New("no volumes")
}

func (d *recordingDriver) Name() string { return "recording" }

func (d *recordingDriver) RunContainer(context.Context, orchestra.Task) (orchestra.Container, error) {
	return nil, errors.New("no containers")
}

func (d *recordingDriver) GetContainer(context.Context, string) (orchestra.Container, error) {
	return nil, orchestra.ErrContainerNotFound
}

func TestRunCase(t *testing.T) {
	tests := []struct {
		name    string
		fn      func(ctx context.Context, env *Env, done *atomic.Bool) error
		leaks   []string
		timeout time.Duration
		want    []string // substrings of the error; none means nil
		skipped bool
	}{
		{
			name: "leak probe after a failed case",
			fn: func(context.Context, *Env, *atomic.Bool) error {
				return errors.New("the case failed")
			},
			leaks: []string{"process 42"},
			want:  []string{"the case failed", "still has: [process 42]"},
		},
		{
			name:  "leak probe after a passed case",
			fn:    func(context.Context, *Env, *atomic.Bool) error { return nil },
			leaks: []string{"volume v"},
			want:  []string{"still has: [volume v]"},
		},
		{
			name:    "timeout cancels the case and waits for it",
			timeout: 50 * time.Millisecond,
			fn: func(ctx context.Context, _ *Env, done *atomic.Bool) error {
				<-ctx.Done()
				time.Sleep(200 * time.Millisecond) // still cleaning up
				done.Store(true)
				return ctx.Err()
			},
			want: []string{"did not finish within 50ms"},
		},
		{
			name:    "skip",
			fn:      func(context.Context, *Env, *atomic.Bool) error { return skip("no SandboxDriver") },
			want:    []string{"no SandboxDriver"},
			skipped: true,
		},
		{
			name:  "skip with a leak is a failure",
			fn:    func(context.Context, *Env, *atomic.Bool) error { return skip("no SandboxDriver") },
			leaks: []string{"dir"},
			want:  []string{"no SandboxDriver", "still has: [dir]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var caseDone atomic.Bool
			d := &recordingDriver{caseDone: &caseDone}
			opts := Options{
				New:     func(string) (orchestra.Driver, error) { return d, nil },
				Timeout: tt.timeout,
				Leaks:   func(string) ([]string, error) { return tt.leaks, nil },
			}.withDefaults()
			err := runCase(t.Context(), opts, Case{Name: tt.name, Fn: func(ctx context.Context, env *Env) error {
				err := tt.fn(ctx, env, &caseDone)
				caseDone.Store(true)
				return err
			}})
			if d.closed.Load() == 0 {
				t.Fatal("the driver was not closed")
			}
			if !d.caseDoneAt.Load() {
				t.Fatal("the driver was closed while the case still ran")
			}
			reason, isSkip := skipped(err)
			if isSkip != tt.skipped {
				t.Fatalf("skipped = %v (%q), expected %v; err %v", isSkip, reason, tt.skipped, err)
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("expected an error containing %q, got %v", w, err)
				}
			}
			if len(tt.want) == 0 && err != nil {
				t.Fatalf("expected nil, got %v", err)
			}
		})
	}
}
