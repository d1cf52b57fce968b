package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// A docker volume lives in the engine, so its files move through the
// engine's archive API on a throwaway helper container that mounts the
// volume at helperMount. The helper is created, never started: the archive
// API mounts a stopped container's volumes itself, so no process runs and
// the image's tools do not matter. It carries the namespace label, so Close
// and Leaks see it if the driver dies mid-copy. See README.md, "Volume
// data".

var _ orchestra.VolumeDataAccessor = (*Driver)(nil)

const (
	// helperImage is the image helper containers are created from (pulled
	// when absent); nothing of it runs.
	helperImage = "busybox"
	// helperMount is where a helper mounts its volume.
	helperMount = "/volume"
	// helperRole is the value of LabelHelper on volume data helpers.
	helperRole = "volume-data"
)

// rootEntry is a tar header for the directory "./", put in front of every
// archive CopyToVolume hands to the engine. The engine skips it (the
// volume's root exists), and it makes sure the stream the engine sees
// starts with a tar header: the engine decompresses a stream that starts
// like gzip, bzip2, xz or zstd, so without it an archive crafted to be both
// a tar (which volumetar.Check validates) and a compressed stream (whose
// content nobody checked) would be extracted as the latter.
var rootEntry = func() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatUSTAR}); err != nil {
		panic(err)
	}
	if err := tw.Flush(); err != nil {
		panic(err)
	}
	return buf.Bytes() // no end marker: the caller's archive follows
}()

// CopyToVolume extracts the tar archive read from reader into the volume,
// creating the volume when it does not exist (as RunContainer's mounts do).
// The stream goes through volumetar.Check before the engine sees it, so an
// unsafe entry (absolute, climbing out with "..", through a link made
// earlier in the archive, a device, a truncated stream) fails the call with
// an error naming it that wraps volumetar.ErrUnsafeEntry; the engine never
// receives that entry, and what came before it stays in the volume. An
// entry that goes through a symlink already in the volume and leading
// outside it is written by the engine into the helper's own filesystem,
// which is thrown away: the call fails naming where it landed.
func (d *Driver) CopyToVolume(ctx context.Context, volumeName string, reader io.Reader) error {
	if err := orchestra.ValidateVolumeName(volumeName); err != nil {
		return fmt.Errorf("docker: copy into volume: %w", err)
	}
	id, err := d.newHelper(ctx, volumeName, false)
	if err != nil {
		return fmt.Errorf("docker: copy into volume %q: %w", volumeName, err)
	}
	defer d.removeHelper(id)
	checked := &errorRecorder{r: volumetar.Check(reader)}
	stream := io.MultiReader(bytes.NewReader(rootEntry), checked)
	err = d.client.CopyToContainer(ctx, id, helperMount, stream, container.CopyToContainerOptions{
		// An entry replaces what is at its name, a directory too, as
		// volumetar.Extract does.
		AllowOverwriteDirWithFile: true,
	})
	if checked.err != nil {
		// The stream failed (an unsafe entry, a truncated archive, the
		// caller's reader): that is the cause, whatever the engine said.
		return fmt.Errorf("docker: copy into volume %q: %w", volumeName, checked.err)
	}
	if err != nil {
		return fmt.Errorf("docker: copy into volume %q: the engine's extraction failed: %w", volumeName, err)
	}
	if err := d.checkHelperWrites(ctx, id); err != nil {
		return fmt.Errorf("docker: copy into volume %q: %w", volumeName, err)
	}
	return nil
}

// checkHelperWrites fails when the extraction changed anything in the
// helper's own filesystem: the engine followed a symlink already in the
// volume out of it (its extractor is confined to the container's root, so
// the write landed in the helper, which is discarded).
func (d *Driver) checkHelperWrites(ctx context.Context, id string) error {
	changes, err := d.client.ContainerDiff(ctx, id)
	if err != nil {
		return fmt.Errorf("list what the extraction changed outside the volume: %w", err)
	}
	var outside []string
	for _, c := range changes {
		if c.Path == helperMount || strings.HasPrefix(c.Path, helperMount+"/") {
			continue // the mount point itself
		}
		if len(outside) < 5 {
			outside = append(outside, c.Path)
		}
	}
	if len(outside) == 0 {
		return nil
	}
	return fmt.Errorf("%w: an entry went through a symlink already in the volume that leads outside it; "+
		"it was not written to the volume (it landed at %s in the throwaway helper container)",
		volumetar.ErrUnsafeEntry, strings.Join(outside, ", "))
}

// CopyFromVolume returns a tar archive of the whole volume, entry names
// relative to its root ("a.txt", "sub/", "sub/b.txt"), streamed from the
// engine as the caller reads it. A volume that does not exist in the
// namespace is an error wrapping orchestra.ErrVolumeNotFound. Closing the
// reader, or ending ctx, stops the stream and removes the helper.
func (d *Driver) CopyFromVolume(ctx context.Context, volumeName string) (io.ReadCloser, error) {
	rc, err := d.readVolume(ctx, volumeName, []string{"."})
	if err != nil {
		return nil, fmt.Errorf("docker: copy from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// ReadFilesFromVolume returns a tar archive of the given files and
// directories (with everything under them), named relative to the volume's
// root as `tar -C <root> <paths>` names them ("sub/deeper/x.txt"), streamed
// as the caller reads it. A path that is absolute, climbs out with "..",
// or goes through a symlink leading outside the volume is refused
// (volumetar.ErrUnsafePath) before any byte. A path that does not exist is
// an error wrapping fs.ErrNotExist, before any byte, as in pocketci's native
// driver and ours (pocketci's docker driver leaves it out silently; the
// drivers here agree with each other instead). No paths give an empty
// archive.
func (d *Driver) ReadFilesFromVolume(ctx context.Context, volumeName string, filePaths ...string) (io.ReadCloser, error) {
	names := make([]string, 0, len(filePaths))
	for _, p := range filePaths {
		name, err := volumetar.CleanPath(p)
		if err != nil {
			return nil, fmt.Errorf("docker: read files from volume %q: %w", volumeName, err)
		}
		names = append(names, name)
	}
	rc, err := d.readVolume(ctx, volumeName, names)
	if err != nil {
		return nil, fmt.Errorf("docker: read files from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// readVolume checks the cleaned names (see ReadFilesFromVolume; "." is the
// whole volume) on a read-only helper, then streams their archives as one.
func (d *Driver) readVolume(ctx context.Context, volumeName string, names []string) (io.ReadCloser, error) {
	if err := orchestra.ValidateVolumeName(volumeName); err != nil {
		return nil, err
	}
	id, err := d.newHelper(ctx, volumeName, true)
	if err != nil {
		return nil, err
	}
	if err := d.checkPaths(ctx, id, names); err != nil {
		d.removeHelper(id)
		return nil, err
	}
	// sctx ends the engine's stream when the caller closes the reader.
	sctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	// A writer blocked on a reader that stopped reading: ctx frees it.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stop()
		pw.CloseWithError(d.writeArchive(sctx, id, names, pw)) // nil: EOF
		d.removeHelper(id)
	}()
	return &volumeReader{PipeReader: pr, cancel: cancel, done: done}, nil
}

// volumeReader is an archive streamed out of a volume.
type volumeReader struct {
	*io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

// Close stops the stream and returns once its helper container is removed.
func (v *volumeReader) Close() error {
	v.cancel()
	_ = v.PipeReader.Close()
	<-v.done
	return nil
}

// checkPaths refuses a name that does not exist in the helper's volume or
// goes through a symlink leading outside it.
func (d *Driver) checkPaths(ctx context.Context, id string, names []string) error {
	for _, name := range names {
		ok, err := d.checkVolumePath(ctx, id, name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("volume path %q: %w", name, fs.ErrNotExist)
		}
	}
	return nil
}

// checkVolumePath reports whether name exists in the helper's volume. Each
// directory above it that is a symlink must resolve inside the volume (the
// engine resolves symlinks within the helper's root, so one leading out
// would read the helper's own files); the last component is archived as it
// is, a symlink as a symlink.
func (d *Driver) checkVolumePath(ctx context.Context, id, name string) (bool, error) {
	if name == "." {
		return true, nil
	}
	parts := strings.Split(name, "/")
	for i := range parts {
		p := path.Join(helperMount, strings.Join(parts[:i+1], "/"))
		st, err := d.client.ContainerStatPath(ctx, id, p)
		if cerrdefs.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("volume path %q: %w", name, err)
		}
		if i == len(parts)-1 || st.Mode&os.ModeSymlink == 0 {
			continue
		}
		if t := st.LinkTarget; t != helperMount && !strings.HasPrefix(t, helperMount+"/") {
			return false, fmt.Errorf("%w %q: %q is a symlink that leads outside the volume", volumetar.ErrUnsafePath, name, strings.Join(parts[:i+1], "/"))
		}
	}
	return true, nil
}

// writeArchive writes to w one tar of the names, each read from the engine
// in turn and renamed relative to the volume's root.
func (d *Driver) writeArchive(ctx context.Context, id string, names []string, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, name := range names {
		src := path.Join(helperMount, name)
		if name == "." {
			src = helperMount + "/." // the contents, named "./…"
		}
		rc, _, err := d.client.CopyFromContainer(ctx, id, src)
		if err != nil {
			return fmt.Errorf("read %q from the engine: %w", name, err)
		}
		err = rebase(tw, rc, name)
		_ = rc.Close()
		if err != nil {
			return fmt.Errorf("read %q from the engine: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	return nil
}

// rebase copies the engine's archive of name into tw, renaming its entries
// relative to the volume's root: the engine names them after name's last
// component ("deeper/b.txt" for "sub/deeper"), or "./…" for the whole
// volume, whose own "./" entry is left out.
func rebase(tw *tar.Writer, r io.Reader, name string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		newName, keep, err := rebaseName(hdr.Name, name)
		if err != nil {
			return err
		}
		if !keep {
			continue
		}
		hdr.Name = newName
		if hdr.Typeflag == tar.TypeLink {
			if hdr.Linkname, _, err = rebaseName(hdr.Linkname, name); err != nil {
				return err
			}
		}
		delete(hdr.PAXRecords, "path")
		delete(hdr.PAXRecords, "linkpath")
		hdr.Format = tar.FormatUnknown // the writer picks one the new name fits
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("entry %q: %w", newName, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("entry %q: %w", newName, err)
		}
	}
}

// rebaseName maps an entry name of the engine's archive of name onto a
// name relative to the volume's root; keep is false for the root itself.
func rebaseName(entry, name string) (string, bool, error) {
	if name == "." {
		rest := strings.TrimPrefix(entry, "./")
		return rest, rest != "" && rest != "." && entry != ".", nil
	}
	base := path.Base(name)
	if entry != base && !strings.HasPrefix(entry, base+"/") {
		return "", false, fmt.Errorf("unexpected entry %q in the engine's archive of %q", entry, name)
	}
	if dir := path.Dir(name); dir != "." {
		return dir + "/" + entry, true, nil
	}
	return entry, true, nil
}

// newHelper creates (without starting) a helper container that mounts the
// namespace's volume volumeName at helperMount, read-only when reading.
// For a read the volume must exist (orchestra.ErrVolumeNotFound); a write
// creates it as CreateVolume does.
func (d *Driver) newHelper(ctx context.Context, name string, readOnly bool) (string, error) {
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return "", orchestra.ErrClosed
	}
	if err := d.connect(ctx); err != nil {
		return "", err
	}
	vname := volumeName(d.namespace, name)
	if readOnly {
		if err := d.volumeExists(ctx, name); err != nil {
			return "", err
		}
	} else if _, err := d.createVolume(ctx, name); err != nil {
		return "", err
	}
	ref, err := d.ensureImage(ctx, helperImage)
	if err != nil {
		return "", fmt.Errorf("helper image: %w", err)
	}
	labels := map[string]string{LabelNamespace: d.namespace, LabelHelper: helperRole, LabelVolume: name}
	created, err := d.client.ContainerCreate(ctx,
		&container.Config{Image: ref, Cmd: []string{"true"}, Labels: labels, NetworkDisabled: true},
		&container.HostConfig{
			LogConfig: logConfig,
			Mounts: []mount.Mount{{
				Type: mount.TypeVolume, Source: vname, Target: helperMount, ReadOnly: readOnly,
				// Should the volume vanish meanwhile, the one the engine
				// makes carries the namespace, so Close removes it.
				VolumeOptions: &mount.VolumeOptions{NoCopy: true, Labels: map[string]string{LabelNamespace: d.namespace, LabelVolume: name}},
			}},
		}, nil, nil, "")
	if err != nil {
		return "", fmt.Errorf("create the helper container: %w", err)
	}
	return created.ID, nil
}

// volumeExists checks that the namespace has volume name, asking the
// engine (another driver instance may have created it).
func (d *Driver) volumeExists(ctx context.Context, name string) error {
	v, err := d.client.VolumeInspect(ctx, volumeName(d.namespace, name))
	if cerrdefs.IsNotFound(err) || (err == nil && v.Labels[LabelNamespace] != d.namespace) {
		return fmt.Errorf("volume %q in namespace %q: %w", name, d.namespace, orchestra.ErrVolumeNotFound)
	}
	if err != nil {
		return fmt.Errorf("inspect volume %q: %w", name, err)
	}
	return nil
}

// removeHelper force-removes a helper container, logging a failure (Close
// removes what is left).
func (d *Driver) removeHelper(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		d.logger.Warn("could not remove a volume data helper container", "id", id, "err", err)
	}
}
