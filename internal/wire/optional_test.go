package wire

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// openLabelled opens a fake driver whose config label picks its optional
// interfaces.
func openLabelled(t *testing.T, c *Client, label string) orchestra.Driver {
	t.Helper()
	d, err := c.Open(context.Background(), "ns-"+strings.ReplaceAll(label, " ", "-"), OpenOptions{Config: []byte(`{"label":"` + label + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestOptionalInterfacesTellTheTruth: the driver a plugin's client returns
// has each optional interface exactly when the plugin's driver has it.
func TestOptionalInterfacesTellTheTruth(t *testing.T) {
	c := connect(t)
	for _, tt := range []struct {
		label   string
		vd, sbx bool
	}{
		{"plain", false, false},
		{"volumes", true, false},
		{"sandboxes", false, true},
		{"volumes sandboxes", true, true},
	} {
		t.Run(tt.label, func(t *testing.T) {
			d := openLabelled(t, c, tt.label)
			_, vd := d.(orchestra.VolumeDataAccessor)
			_, sbx := d.(orchestra.SandboxDriver)
			if vd != tt.vd || sbx != tt.sbx {
				t.Fatalf("VolumeDataAccessor %v, SandboxDriver %v; want %v, %v", vd, sbx, tt.vd, tt.sbx)
			}
			if _, err := d.RunContainer(context.Background(), orchestra.Task{ID: "t", Command: []string{"out", "1"}}); err != nil {
				t.Fatalf("the base driver works whatever it adds: %v", err)
			}
		})
	}
}

func TestVolumeDataRoundTrip(t *testing.T) {
	vd := openLabelled(t, connect(t), "volumes").(orchestra.VolumeDataAccessor)
	ctx := context.Background()
	archive := bytes.Repeat([]byte("tar!"), 3<<20) // 12 MiB: many frames
	if err := vd.CopyToVolume(ctx, "v", bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func() (io.ReadCloser, error){
		"CopyFromVolume":      func() (io.ReadCloser, error) { return vd.CopyFromVolume(ctx, "v") },
		"ReadFilesFromVolume": func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(ctx, "v", "a") },
	} {
		rc, err := open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, archive) {
			t.Fatalf("%s: %d bytes, %v; want the %d bytes copied in", name, len(got), err, len(archive))
		}
	}
}

// TestVolumeDataErrorsAreErrors: an error on either side, before or in the
// middle of an archive, reaches the caller as an error naming the plugin,
// never as a short archive that looks complete.
func TestVolumeDataErrorsAreErrors(t *testing.T) {
	vd := openLabelled(t, connect(t), "volumes").(orchestra.VolumeDataAccessor)
	ctx := context.Background()
	err := vd.CopyToVolume(ctx, "v", io.MultiReader(strings.NewReader("part"), iotest.ErrReader(errors.New("upload cut"))))
	if err == nil || !strings.Contains(err.Error(), "upload cut") || !strings.Contains(err.Error(), "plugin fake") {
		t.Fatalf("CopyToVolume from a failing reader: %v", err)
	}
	if _, err := vd.CopyFromVolume(ctx, "missing"); !errors.Is(err, orchestra.ErrVolumeNotFound) {
		t.Fatalf("CopyFromVolume of an unknown volume: %v, want ErrVolumeNotFound at the call", err)
	}
	if _, err := vd.ReadFilesFromVolume(ctx, "v", "../escape"); !errors.Is(err, orchestra.ErrInvalidTask) {
		t.Fatalf("ReadFilesFromVolume of an escaping path: %v", err)
	}
	rc, err := vd.CopyFromVolume(ctx, "broken")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err == nil || !strings.Contains(err.Error(), "disk fell off") {
		t.Fatalf("an archive that fails after %d bytes read as %v, want the plugin's error", n, err)
	}
}

func TestSandboxExec(t *testing.T) {
	sd := openLabelled(t, connect(t), "sandboxes").(orchestra.SandboxDriver)
	ctx := context.Background()
	sb, err := sd.StartSandbox(ctx, orchestra.Task{ID: "s1", Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID() != "sb-s1" {
		t.Fatalf("ID = %q", sb.ID())
	}
	var out, errb bytes.Buffer
	st, err := sb.Exec(ctx, []string{"echo", "hi"}, map[string]string{"GREET": "hey"}, "/tmp", nil, &out, &errb)
	if err != nil || st.ExitCode() != 0 || out.String() != "hi|/tmp|1\n" || errb.String() != "hey" {
		t.Fatalf("echo: %v, %v, %q, %q", st, err, out.String(), errb.String())
	}
	out.Reset()
	big := strings.Repeat("0123456789", 500_000)
	if st, err = sb.Exec(ctx, []string{"cat"}, nil, "", strings.NewReader(big), &out, io.Discard); err != nil || out.String() != big {
		t.Fatalf("cat of 5 MB: %v, %d bytes back", err, out.Len())
	}
	if st, err = sb.Exec(ctx, []string{"exit", "42"}, nil, "", nil, io.Discard, io.Discard); err != nil || st.ExitCode() != 42 {
		t.Fatalf("exit 42: %v, %v", st, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := sb.Exec(wctx, []string{"wait"}, nil, "", nil, io.Discard, io.Discard); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a cancelled Exec: %v, want DeadlineExceeded", err)
	}
	if err := sb.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Cleanup(ctx); err != nil {
		t.Fatalf("a second Cleanup: %v", err)
	}
	if _, err := sb.Exec(ctx, []string{"echo"}, nil, "", nil, io.Discard, io.Discard); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("Exec after Cleanup: %v, want a clear not-found error", err)
	}
}
