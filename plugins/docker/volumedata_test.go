package docker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

type entry struct {
	name, body, link string
	typ              byte
}

func makeTar(entries ...entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		_, _ = io.WriteString(tw, e.body)
	}
	_ = tw.Close()
	return buf.Bytes()
}

// listTar describes every entry of an archive: "name" for a file (with
// its body after "="), "name/" for a directory, "name -> target" for a
// symlink, "name => target" for a hard link.
func listTar(t *testing.T, rc io.ReadCloser, err error) []string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			sort.Strings(out)
			return out
		}
		if err != nil {
			t.Fatalf("reading the archive: %v", err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			out = append(out, h.Name+"="+string(b))
		case tar.TypeSymlink:
			out = append(out, h.Name+" -> "+h.Linkname)
		case tar.TypeLink:
			out = append(out, h.Name+" => "+h.Linkname)
		default:
			out = append(out, h.Name)
		}
	}
}

// inVolume runs script in a task that mounts volume at /v and returns its
// stdout.
func inVolume(ctx context.Context, t *testing.T, d *Driver, volume, script string) string {
	t.Helper()
	id := fmt.Sprintf("sh-%s-%d", volume, len(script)) + randomHex(3)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: id, Image: testImage, Command: []string{"sh", "-c", script},
		Mounts: orchestra.Mounts{{Name: volume, Path: "/v"}}})
	if r.ExitCode != 0 {
		t.Fatalf("%q: exit %d, %q %q", script, r.ExitCode, string(r.Stdout), string(r.Stderr))
	}
	return string(r.Stdout)
}

// helpersLeft lists the namespace's volume data helpers still there.
func helpersLeft(ctx context.Context, t *testing.T, d *Driver) int {
	t.Helper()
	args := namespaceFilter(d.namespace)
	args.Add("label", LabelHelper)
	list, err := d.client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.Args(args)})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

type failingReader struct{ r io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("the caller's reader broke")
	}
	return n, err
}

// TestCopyToVolumeRefusesHostileArchives checks every refusal: named,
// wrapping volumetar's errors, nothing of the bad entry in the volume, no
// helper left behind.
func TestCopyToVolumeRefusesHostileArchives(t *testing.T) {
	d, _ := newTestDriver(t, "vdh")
	ctx := testContext(t)
	good := entry{name: "good.txt", body: "good", typ: tar.TypeReg}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(makeTar(entry{name: "zipped.txt", body: "z", typ: tar.TypeReg}))
	_ = zw.Close()
	whole := makeTar(good, entry{name: "cut.txt", body: strings.Repeat("c", 2000), typ: tar.TypeReg})
	cases := []struct {
		name  string
		r     io.Reader
		wants []string
		is    error
	}{
		{"dot-dot", bytes.NewReader(makeTar(good, entry{name: "../escape.txt", body: "x", typ: tar.TypeReg})), []string{"../escape.txt"}, volumetar.ErrUnsafeEntry},
		{"absolute", bytes.NewReader(makeTar(entry{name: "/abs.txt", body: "x", typ: tar.TypeReg})), []string{"/abs.txt"}, volumetar.ErrUnsafeEntry},
		{"through a link of the archive", bytes.NewReader(makeTar(entry{name: "l", link: "/tmp", typ: tar.TypeSymlink}, entry{name: "l/x.txt", body: "x", typ: tar.TypeReg})), []string{"l/x.txt"}, volumetar.ErrUnsafeEntry},
		{"device", bytes.NewReader(makeTar(entry{name: "dev", typ: tar.TypeChar})), []string{"dev"}, volumetar.ErrUnsafeEntry},
		{"hard link out", bytes.NewReader(makeTar(entry{name: "h", link: "/etc/passwd", typ: tar.TypeLink})), []string{"h"}, volumetar.ErrUnsafeEntry},
		{"gzip", bytes.NewReader(gz.Bytes()), nil, nil},
		{"truncated", bytes.NewReader(whole[:1024+512]), []string{"cut.txt"}, volumetar.ErrTruncated},
		{"reader fails", &failingReader{r: bytes.NewReader(makeTar(good)[:1024])}, []string{"the caller's reader broke"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := d.CopyToVolume(ctx, "hostile", c.r)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q does not wrap %v", err, c.is)
			}
			t.Logf("refused: %v", err)
		})
	}
	out := inVolume(ctx, t, d, "hostile", "cd /v && find . | sort")
	// A truncated entry's data, like volumetar.Extract's, stays as far as
	// it came.
	for _, bad := range []string{"escape", "abs", "x.txt", "dev", "./h\n", "zipped"} {
		if strings.Contains(out, bad) {
			t.Errorf("the volume holds %q after the refusals:\n%s", bad, out)
		}
	}
	if n := helpersLeft(ctx, t, d); n != 0 {
		t.Errorf("%d helper containers left", n)
	}
}

// TestVolumeDataExistingSymlinks checks archives and paths meeting symlinks
// a task left in the volume: one leading out (the engine's extractor would
// follow it into the helper's own root: refused), one leading inside
// (followed, as volumetar.Extract does), one where a file goes (replaced,
// never written through).
func TestVolumeDataExistingSymlinks(t *testing.T) {
	d, _ := newTestDriver(t, "vds")
	ctx := testContext(t)
	inVolume(ctx, t, d, "links", "cd /v && mkdir sub && ln -s /tmp out && ln -s sub inside && ln -s /etc/passwd ptr && ln -s ../../.. up")

	err := d.CopyToVolume(ctx, "links", bytes.NewReader(makeTar(entry{name: "out/through.txt", body: "x", typ: tar.TypeReg})))
	if !errors.Is(err, volumetar.ErrUnsafeEntry) || !strings.Contains(err.Error(), "/tmp/through.txt") {
		t.Fatalf("through a symlink leading out: %v; want ErrUnsafeEntry naming where it landed", err)
	}
	t.Logf("refused: %v", err)
	err = d.CopyToVolume(ctx, "links", bytes.NewReader(makeTar(entry{name: "up/etc/through.txt", body: "x", typ: tar.TypeReg})))
	if !errors.Is(err, volumetar.ErrUnsafeEntry) {
		t.Fatalf("through a relative symlink climbing out: %v; want ErrUnsafeEntry", err)
	}
	err = d.CopyToVolume(ctx, "links", bytes.NewReader(makeTar(
		entry{name: "inside/in.txt", body: "in", typ: tar.TypeReg}, entry{name: "ptr", body: "replaced", typ: tar.TypeReg})))
	if err != nil {
		t.Fatalf("through a symlink leading inside, and over one: %v", err)
	}
	got := inVolume(ctx, t, d, "links", "cd /v && cat sub/in.txt && echo && test -f ptr && ! test -L ptr && cat ptr && echo && head -c 5 /etc/passwd")
	if got != "in\nreplaced\nroot:" {
		t.Fatalf("volume after the copy: %q", got)
	}

	for _, p := range []string{"out/x", "up/etc/passwd"} {
		if _, err := d.ReadFilesFromVolume(ctx, "links", p); !errors.Is(err, volumetar.ErrUnsafePath) {
			t.Errorf("ReadFilesFromVolume %q through a symlink leading out: %v; want ErrUnsafePath", p, err)
		}
	}
	rc, err := d.ReadFilesFromVolume(ctx, "links", "out", "inside/in.txt")
	if got := strings.Join(listTar(t, rc, err), " "); got != "inside/in.txt=in out -> /tmp" {
		t.Errorf("ReadFilesFromVolume of a symlink and a path through one leading inside: %s", got)
	}
	if n := helpersLeft(ctx, t, d); n != 0 {
		t.Errorf("%d helper containers left", n)
	}
}

// TestVolumeDataArchives checks names, missing paths and volumes, and
// that an archive round-trips (long names, hard links, empty dirs).
func TestVolumeDataArchives(t *testing.T) {
	d, _ := newTestDriver(t, "vda")
	ctx := testContext(t)
	long := strings.Repeat("n", 120) + "/" + strings.Repeat("m", 130) + ".txt"
	archive := makeTar(
		entry{name: "a.txt", body: "A", typ: tar.TypeReg},
		entry{name: "sub/", typ: tar.TypeDir},
		entry{name: "sub/deeper/", typ: tar.TypeDir},
		entry{name: "sub/deeper/b.txt", body: "B", typ: tar.TypeReg},
		entry{name: "sub/deeper/hl", link: "sub/deeper/b.txt", typ: tar.TypeLink},
		entry{name: "empty/", typ: tar.TypeDir},
		entry{name: long, body: "L", typ: tar.TypeReg},
	)
	if err := d.CopyToVolume(ctx, "arch", bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		paths []string
		want  string
	}{
		{"file", []string{"a.txt"}, "a.txt=A"},
		{"nested dir", []string{"sub/deeper"}, "sub/deeper/ sub/deeper/b.txt=B sub/deeper/hl => sub/deeper/b.txt"},
		{"dir", []string{"./sub/"}, "sub/ sub/deeper/ sub/deeper/b.txt=B sub/deeper/hl => sub/deeper/b.txt"},
		{"none", nil, ""},
		{"long name", []string{long}, long + "=L"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, err := d.ReadFilesFromVolume(ctx, "arch", c.paths...)
			if got := strings.Join(listTar(t, rc, err), " "); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	rc, err := d.CopyFromVolume(ctx, "arch")
	got := strings.Join(listTar(t, rc, err), " ")
	want := "a.txt=A empty/ " + strings.Repeat("n", 120) + "/ " + long + "=L sub/ sub/deeper/ sub/deeper/b.txt=B sub/deeper/hl => sub/deeper/b.txt"
	if got != want {
		t.Fatalf("CopyFromVolume: %q\nwant %q", got, want)
	}
	for _, paths := range [][]string{{"missing", "a.txt"}, {"nope/nothing"}} {
		if _, err := d.ReadFilesFromVolume(ctx, "arch", paths...); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), paths[0]) {
			t.Errorf("ReadFilesFromVolume %q: %v; want fs.ErrNotExist naming %q", paths, err, paths[0])
		}
	}
	for _, p := range []string{"../x", "/etc", "a/../../x", ""} {
		if _, err := d.ReadFilesFromVolume(ctx, "arch", p); !errors.Is(err, volumetar.ErrUnsafePath) {
			t.Errorf("ReadFilesFromVolume %q: %v; want ErrUnsafePath", p, err)
		}
	}
	for name, open := range map[string]func() (io.ReadCloser, error){
		"CopyFromVolume":      func() (io.ReadCloser, error) { return d.CopyFromVolume(ctx, "never-made") },
		"ReadFilesFromVolume": func() (io.ReadCloser, error) { return d.ReadFilesFromVolume(ctx, "never-made", "a") },
	} {
		if _, err := open(); !errors.Is(err, orchestra.ErrVolumeNotFound) {
			t.Errorf("%s of a missing volume: %v; want ErrVolumeNotFound", name, err)
		}
	}
	// The engine's extractor refuses a symlink whose relative target climbs
	// out of the volume (volumetar.Check lets it through, and
	// volumetar.Extract creates it: symlinks keep their targets, as docker
	// cp does for absolute ones).
	err = d.CopyToVolume(ctx, "arch", bytes.NewReader(makeTar(entry{name: "rel", link: "../../etc", typ: tar.TypeSymlink})))
	if err == nil || !strings.Contains(err.Error(), "invalid symlink") {
		t.Errorf("a symlink climbing out with ..: %v; want the engine's refusal", err)
	}
	if err := d.CopyToVolume(ctx, "arch", bytes.NewReader(makeTar(entry{name: "abs", link: "/etc", typ: tar.TypeSymlink}))); err != nil {
		t.Errorf("an absolute symlink: %v", err)
	}
	// A reader closed early, and one whose ctx ends, stop the stream.
	rc, err = d.CopyFromVolume(ctx, "arch")
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	cctx, cancel := context.WithCancel(ctx)
	rc, err = d.CopyFromVolume(cctx, "arch")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Errorf("reading after ctx ended: %v; want context.Canceled", err)
	}
	_ = rc.Close()
}
