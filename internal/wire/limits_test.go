package wire

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// TestTaskSizeLimits: a plugin takes a 10 MiB task (over gRPC's 4 MiB
// default) on its Run stream; a task over the limit is refused before it is
// sent with ErrInvalidTask naming the field and the limit.
func TestTaskSizeLimits(t *testing.T) {
	big := map[string]string{"BIG": strings.Repeat("x", 10<<20)}
	huge := map[string]string{"HUGE": strings.Repeat("x", 65<<20)}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"10 MiB", big, ""},
		{"65 MiB", huge, "over the 64.0 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := open(t, connect(t))
			start := time.Now()
			c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "big", Command: []string{"true"}, Env: tt.env})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("RunContainer of a 10 MiB task: %v", time.Since(start))
				if err := c.Cleanup(context.Background()); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "largest field is Env") {
				t.Fatalf("RunContainer = %v, want ErrInvalidTask naming Env and %q", err, tt.wantErr)
			}
		})
	}
}

// TestExitCodesOutsideAByteAreErrors: an exit code outside 0-255, in a
// Status reply or a follow's exit frame, is an error naming the plugin and the
// call, never a success; 2^32+3 is caught before int32 truncation makes it 3.
func TestExitCodesOutsideAByteAreErrors(t *testing.T) {
	raw := func(code uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1), 2, protowire.VarintType), code)
	}
	for _, tt := range []struct {
		name string
		code uint64
		ok   bool
	}{
		{"0", 0, true}, {"255", 255, true}, {"256", 256, false}, {"-7", uint64(1<<64 - 7), false}, {"2^32+3", 1<<32 + 3, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rpc := &replyClient{replies: [][]byte{raw(tt.code)}}
			c := &clientContainer{driver: &clientDriver{client: NewClient("liar", rpc)}, ref: &driverv1.ContainerRef{Container: 1}}
			st, err := c.Status(context.Background())
			if tt.ok {
				if err != nil || int64(st.ExitCode()) != int64(tt.code) {
					t.Fatalf("Status = %v, %v", st, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "plugin liar: Status") || !strings.Contains(err.Error(), "outside 0-255") {
				t.Fatalf("Status with exit code %d = %v, %v; want an error naming the plugin, the call and the range", int64(tt.code), st, err)
			}
		})
	}
}
