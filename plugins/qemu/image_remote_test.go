package qemu

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/jtarchie/pocketci/orchestra"
)

// layerOf is a layer holding files (name -> content; a "->" prefix makes a
// symlink, a ".wh." name a whiteout).
func layerOf(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, body := range files {
		h := &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len(body))}
		if target, ok := strings.CutPrefix(body, "->"); ok {
			h = &tar.Header{Name: n, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: target}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxImage is an image made in process: the host's static busybox, a
// marker file, a file the second layer whites out, and an Env.
func busyboxImage(t *testing.T, marker string) v1.Image {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("the image is built from the host's static busybox: %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image,
		layerOf(t, map[string]string{"bin/busybox": string(bb), "bin/sh": "->busybox", "bin/cat": "->busybox", "bin/test": "->busybox", "gone": "x"}),
		layerOf(t, map[string]string{"marker": marker + "\n", ".wh.gone": ""}))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin", "SOURCE=" + marker}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImageSources runs tasks in images from a registry (an in-process
// go-containerregistry server), an OCI layout and a tarball, with no Docker
// Engine involved.
func TestImageSources(t *testing.T) {
	requireQEMU(t)
	t.Setenv(EnvImageCache, t.TempDir())
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-engine.sock"))
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	regRef := host + "/pocketci/marker:v1"
	ref, err := name.ParseReference(regRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, busyboxImage(t, "from-registry")); err != nil {
		t.Fatal(err)
	}
	layoutDir := t.TempDir()
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(busyboxImage(t, "from-layout")); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	tag, _ := name.NewTag("pocketci/archive:v1")
	if err := tarball.WriteToFile(archive, tag, busyboxImage(t, "from-archive")); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)
	for i, tt := range []struct{ image, want string }{
		{regRef, "from-registry"}, {"oci:" + layoutDir, "from-layout"}, {"docker-archive:" + archive, "from-archive"},
	} {
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "src-" + string(rune('a'+i)), Image: tt.image,
			Command: []string{"sh", "-c", `cat /marker; echo "$SOURCE"; test -e /gone && echo whiteout-ignored; true`}})
		if want := tt.want + "\n" + tt.want + "\n"; code != 0 || out != want {
			t.Errorf("%s: exit %d stdout %q stderr %q, want %q", tt.image, code, out, errs, want)
		}
	}
	for _, missing := range []string{host + "/pocketci/absent:v1", "oci:" + t.TempDir(), "docker-archive:/nonexistent.tar", "plain-name-without-engine"} {
		_, err := d.RunContainer(ctx, orchestra.Task{ID: "missing " + missing, Image: missing, Command: []string{"true"}})
		if !errors.Is(err, orchestra.ErrImageNotFound) || !strings.Contains(err.Error(), missing) {
			t.Errorf("image %s: %v, want ErrImageNotFound naming it", missing, err)
		}
	}
}
