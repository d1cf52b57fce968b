package conformance

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/jtarchie/pocketci/orchestra"
)

// volumeData is the driver as a VolumeDataAccessor, or a skip.
func volumeData(env *Env) (orchestra.VolumeDataAccessor, error) {
	vd, ok := env.Driver.(orchestra.VolumeDataAccessor)
	if !ok {
		return nil, skip("the driver does not implement orchestra.VolumeDataAccessor")
	}
	return vd, nil
}

// tarEntry is one entry of an archive a case builds.
type tarEntry struct {
	name, body, link string
	typ              byte
}

func buildTar(entries ...tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		_ = tw.WriteHeader(h)
		_, _ = io.WriteString(tw, e.body)
	}
	_ = tw.Close()
	return buf.Bytes()
}

// readTar lists the regular files of an archive with their contents.
func readTar(rc io.ReadCloser) (map[string]string, error) {
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("read %q: %w", h.Name, err)
			}
			files[strings.TrimPrefix(h.Name, "./")] = string(b)
		}
	}
}

// caseVolumeDataRoundTrip checks that an archive copied into a volume is
// what tasks see there and what comes back out, whole or by path, and that
// asking for a path the volume lacks is an error naming it.
func caseVolumeDataRoundTrip(ctx context.Context, env *Env) error {
	vd, err := volumeData(env)
	if err != nil {
		return err
	}
	archive := buildTar(tarEntry{name: "a.txt", body: "file-a\n", typ: tar.TypeReg},
		tarEntry{name: "sub/", typ: tar.TypeDir}, tarEntry{name: "sub/b.txt", body: "file-b\n", typ: tar.TypeReg})
	if err := vd.CopyToVolume(ctx, "vdata", bytes.NewReader(archive)); err != nil {
		return fmt.Errorf("CopyToVolume: %w", err)
	}
	t := task(env, "vdata-read", "sh", "-c", "cat data/a.txt data/sub/b.txt && echo more > data/c.txt")
	t.Mounts = orchestra.Mounts{{Name: "vdata", Path: "data"}}
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	if err := expect(t.ID, r, 0, "file-a\nfile-b\n", nil); err != nil {
		return fmt.Errorf("a task does not see the archive copied in: %w", err)
	}
	checks := []struct {
		what  string
		open  func() (io.ReadCloser, error)
		files string
	}{
		{"CopyFromVolume", func() (io.ReadCloser, error) { return vd.CopyFromVolume(ctx, "vdata") }, "a.txt c.txt sub/b.txt"},
		{"ReadFilesFromVolume a.txt", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(ctx, "vdata", "a.txt") }, "a.txt"},
		{"ReadFilesFromVolume sub", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(ctx, "vdata", "sub") }, "sub/b.txt"},
	}
	for _, c := range checks {
		if err := expectFiles(c.what, c.open, c.files); err != nil {
			return err
		}
	}
	if rc, err := vd.ReadFilesFromVolume(ctx, "vdata", "a.txt", "not-there.txt"); err == nil || !strings.Contains(err.Error(), "not-there.txt") {
		if rc != nil {
			rc.Close()
		}
		return fmt.Errorf("ReadFilesFromVolume of a missing path: %v; want an error naming it", err)
	}
	return nil
}

func expectFiles(what string, open func() (io.ReadCloser, error), want string) error {
	rc, err := open()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	files, err := readTar(rc)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != want {
		return fmt.Errorf("%s: files %q, want %q", what, got, want)
	}
	return nil
}

// caseVolumeDataRefusesEscapes checks that an archive or a path that would
// reach outside the volume is refused, naming the entry, and writes nothing
// outside it.
func caseVolumeDataRefusesEscapes(ctx context.Context, env *Env) error {
	vd, err := volumeData(env)
	if err != nil {
		return err
	}
	hostile := map[string][]byte{
		"../escape.txt":    buildTar(tarEntry{name: "../escape.txt", body: "x", typ: tar.TypeReg}),
		"/abs.txt":         buildTar(tarEntry{name: "/abs.txt", body: "x", typ: tar.TypeReg}),
		"link/through.txt": buildTar(tarEntry{name: "link", link: "/tmp", typ: tar.TypeSymlink}, tarEntry{name: "link/through.txt", body: "x", typ: tar.TypeReg}),
		"dev-null":         buildTar(tarEntry{name: "dev-null", typ: tar.TypeChar}),
		"hard":             buildTar(tarEntry{name: "hard", link: "/etc/passwd", typ: tar.TypeLink}),
		"sub/../../up.txt": buildTar(tarEntry{name: "sub/../../up.txt", body: "x", typ: tar.TypeReg}),
	}
	for entry, archive := range hostile {
		err := vd.CopyToVolume(ctx, "vhostile", bytes.NewReader(archive))
		if err == nil || !strings.Contains(err.Error(), entry) {
			return fmt.Errorf("CopyToVolume of an archive with %q: %v; want a refusal naming the entry", entry, err)
		}
	}
	if rc, err := vd.ReadFilesFromVolume(ctx, "vhostile", "../.."); err == nil {
		rc.Close()
		return errors.New("ReadFilesFromVolume of ../.. was not refused")
	}
	return nil
}
