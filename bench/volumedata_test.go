package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// volumeSize is the size of the archive the volume data benchmarks move.
const volumeSize = 256 << 20

// volumeArchive is a tar of 64 files of 4 MiB (volumeSize in all, plus
// headers), built once: what a cache restore or an artifact moves.
var volumeArchive = func() []byte {
	const files = 64
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("0123456789abcdef"), volumeSize/files/16)
	for i := range files {
		h := &tar.Header{Name: fmt.Sprintf("cache/f%02d", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(body); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}()

// volumeData asserts that d implements orchestra.VolumeDataAccessor.
func volumeData(b *testing.B, d orchestra.Driver) orchestra.VolumeDataAccessor {
	b.Helper()
	vd, ok := d.(orchestra.VolumeDataAccessor)
	if !ok {
		b.Fatalf("%T does not implement orchestra.VolumeDataAccessor", d)
	}
	return vd
}

// copyToStep copies volumeArchive into volume v of vd.
func copyToStep(name string, vd orchestra.VolumeDataAccessor, v string) step {
	return step{name, func() (func(), error) {
		return nil, vd.CopyToVolume(context.Background(), v, bytes.NewReader(volumeArchive))
	}}
}

// copyFromStep reads volume v of vd whole and checks its size.
func copyFromStep(name string, vd orchestra.VolumeDataAccessor, v string) step {
	return step{name, func() (func(), error) {
		rc, err := vd.CopyFromVolume(context.Background(), v)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return nil, drainArchive(rc)
	}}
}

// drainArchive reads a tar stream to its end and checks that it holds at
// least volumeSize bytes of files.
func drainArchive(r io.Reader) error {
	tr := tar.NewReader(r)
	var n int64
	for {
		_, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		m, err := io.Copy(io.Discard, tr)
		if err != nil {
			return err
		}
		n += m
	}
	if n < volumeSize {
		return fmt.Errorf("archive holds %d bytes of files, want %d", n, volumeSize)
	}
	return nil
}

// BenchmarkCopyToVolume256MiB: CopyToVolume of a 256 MiB archive through
// the native plugin. Baseline: the same call on the native driver in
// process (the same extraction, no wire).
func BenchmarkCopyToVolume256MiB(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "vd-to-plugin")
		interleave(b, volumeSize,
			copyToStep("baseline", volumeData(b, nativeDriver(b, "vd-to-base")), "v"),
			copyToStep("plugin", volumeData(b, d), "v"))
	})
}

// BenchmarkCopyFromVolume256MiB: CopyFromVolume of a 256 MiB volume through
// the native plugin, read to its end. Baseline: the same call in process.
func BenchmarkCopyFromVolume256MiB(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "vd-from-plugin")
		base, plugged := volumeData(b, nativeDriver(b, "vd-from-base")), volumeData(b, d)
		for _, vd := range []orchestra.VolumeDataAccessor{base, plugged} {
			if err := vd.CopyToVolume(context.Background(), "v", bytes.NewReader(volumeArchive)); err != nil {
				b.Fatal(err)
			}
		}
		interleave(b, volumeSize, copyFromStep("baseline", base, "v"), copyFromStep("plugin", plugged, "v"))
	})
}

// execStep runs `true` in sandbox s and checks its exit code.
func execStep(name string, s orchestra.Sandbox) step {
	return step{name, func() (func(), error) {
		st, err := s.Exec(context.Background(), []string{"true"}, nil, "", nil, io.Discard, io.Discard)
		if err != nil {
			return nil, err
		}
		if st.ExitCode() != 0 {
			return nil, fmt.Errorf("exit %d", st.ExitCode())
		}
		return nil, nil
	}}
}

// startSandbox starts a sandbox on d, removed with the benchmark.
func startSandbox(b *testing.B, d orchestra.Driver, id string) orchestra.Sandbox {
	b.Helper()
	sd, ok := d.(orchestra.SandboxDriver)
	if !ok {
		b.Fatalf("%T does not implement orchestra.SandboxDriver", d)
	}
	s, err := sd.StartSandbox(context.Background(), orchestra.Task{ID: id, Image: "busybox"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Cleanup(context.Background()) })
	return s
}

// BenchmarkSandboxExecNative: one Exec of `true` in a running sandbox of
// the native plugin. Baseline: the same Exec in process.
func BenchmarkSandboxExecNative(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "sb-plugin")
		interleave(b, 0,
			execStep("baseline", startSandbox(b, nativeDriver(b, "sb-base"), "sb")),
			execStep("plugin", startSandbox(b, d, "sb")))
	})
}

// dockerVolumeTarget opens the docker plugin and makes a stopped container
// that mounts the plugin's volume v, for `docker cp` to reach the same
// volume. Both go with the benchmark.
func dockerVolumeTarget(b *testing.B, v string) (orchestra.VolumeDataAccessor, string) {
	b.Helper()
	path := requireDocker(b)
	p, err := newHost(b).Load(path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := p.Open(context.Background(), fmt.Sprintf("bench-vd-%d", os.Getpid()), host.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	vd := volumeData(b, d)
	if err := vd.CopyToVolume(context.Background(), v, bytes.NewReader(volumeArchive)); err != nil {
		b.Fatal(err)
	}
	vol, err := d.CreateVolume(context.Background(), v, 0)
	if err != nil {
		b.Fatal(err)
	}
	// The engine's name for the volume: the local volume driver mounts it
	// at /var/lib/docker/volumes/<name>/_data.
	engineName := filepath.Base(filepath.Dir(vol.Path()))
	out, err := exec.Command("docker", "create", "-v", engineName+":/data", "busybox").Output()
	if err != nil {
		b.Fatalf("docker create: %v", err)
	}
	id := strings.TrimSpace(string(out))
	b.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", id).Run() })
	return vd, id
}

// dockerCp runs `docker cp` with stdin or stdout as the archive.
func dockerCp(in io.Reader, out io.Writer, args ...string) error {
	cmd := exec.Command("docker", append([]string{"cp"}, args...)...)
	cmd.Stdin, cmd.Stdout = in, out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker cp: %w: %s", err, stderr.String())
	}
	return nil
}

// BenchmarkCopyToVolumeDocker: CopyToVolume of a 256 MiB archive through
// the docker plugin. Baseline: `docker cp - CONTAINER:/data` of the same
// archive into a stopped container that mounts the same volume.
func BenchmarkCopyToVolumeDocker(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		vd, id := dockerVolumeTarget(b, "v")
		interleave(b, volumeSize,
			step{"baseline", func() (func(), error) {
				return nil, dockerCp(bytes.NewReader(volumeArchive), nil, "-", id+":/data")
			}},
			copyToStep("plugin", vd, "v"))
	})
}

// BenchmarkCopyFromVolumeDocker: CopyFromVolume of a 256 MiB volume through
// the docker plugin, read to its end. Baseline: `docker cp CONTAINER:/data -`.
func BenchmarkCopyFromVolumeDocker(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		vd, id := dockerVolumeTarget(b, "v")
		interleave(b, volumeSize,
			step{"baseline", func() (func(), error) {
				pr, pw := io.Pipe()
				done := make(chan error, 1)
				go func() { done <- drainArchive(pr); _, _ = io.Copy(io.Discard, pr) }()
				err := dockerCp(nil, pw, id+":/data", "-")
				pw.CloseWithError(err)
				if derr := <-done; err == nil {
					err = derr
				}
				return nil, err
			}},
			copyFromStep("plugin", vd, "v"))
	})
}
