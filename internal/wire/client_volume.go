package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// clientVolume is the host side of a volume in a plugin. Its twin is
// server_container.go.
type clientVolume struct {
	driver  *clientDriver
	ref     *driverv1.VolumeRef
	cleaned atomic.Bool
}

var _ orchestra.Volume = (*clientVolume)(nil)

// Name is the volume's name.
func (v *clientVolume) Name() string { return v.ref.GetName() }

// Path is where the plugin's driver says the volume is.
func (v *clientVolume) Path() string { return v.ref.GetPath() }

// Cleanup removes the volume in the plugin. The plugin forgets the volume's
// handle once it is removed; removing it again is a no-op here.
func (v *clientVolume) Cleanup(ctx context.Context) error {
	if v.cleaned.Load() {
		return nil
	}
	_, err := v.driver.client.rpc.CleanupVolume(ctx, v.ref)
	if err == nil {
		v.cleaned.Store(true)
	}
	return v.driver.wrap("CleanupVolume", err)
}

// clientVolumeData is the driver as an orchestra.VolumeDataAccessor, when
// the plugin's driver is one. Its twin is server_volume.go.
type clientVolumeData struct{ d *clientDriver }

var _ orchestra.VolumeDataAccessor = clientVolumeData{}

// CopyToVolume streams the tar archive r reads to the plugin, which
// extracts it into the volume. A failing r fails the call in the plugin too:
// the archive ends with r's error, not a clean end.
func (v clientVolumeData) CopyToVolume(ctx context.Context, volume string, r io.Reader) error {
	const op = "CopyToVolume"
	if err := orchestra.ValidateVolumeName(volume); err != nil {
		return fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, err)
	}
	req := &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_VolumeIn{VolumeIn: &driverv1.VolumeDataRequest{Driver: v.d.handle, Volume: volume}}}
	conn, stop, err := v.d.client.dialBulk(ctx, req)
	if err != nil {
		return fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, err)
	}
	defer stop()
	defer conn.Close()
	fw := newFrameWriter(conn, false)
	_, rerr := io.Copy(fw.stream(frameData), r)
	werr := fw.err // a broken connection: the plugin already answered, below
	if werr == nil {
		werr = fw.end(readError(rerr)) // r's own error, or none, ends the archive
	}
	outcome, err := readFrames(conn, func(kind byte, _ []byte) error {
		return v.d.client.invalidReply(op, "frame type %d before the end", kind)
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, ctx.Err())
	case err != nil && werr != nil:
		return fmt.Errorf("plugin %s: %s: send the archive: %w", v.d.client.name, op, werr)
	case err != nil:
		return fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, err)
	}
	return v.d.wrap(op, outcome)
}

// readError is the caller's reader error as the end of a stream carries
// it: its message, without the identity of any sentinel it wraps.
func readError(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(err.Error())
}

// CopyFromVolume is a tar archive of the whole volume, streamed from the
// plugin as it reads it.
func (v clientVolumeData) CopyFromVolume(ctx context.Context, volume string) (io.ReadCloser, error) {
	return v.volumeOut(ctx, "CopyFromVolume", &driverv1.VolumeDataRequest{Driver: v.d.handle, Volume: volume, Whole: true})
}

// ReadFilesFromVolume is a tar archive of the given files and directories of
// the volume.
func (v clientVolumeData) ReadFilesFromVolume(ctx context.Context, volume string, paths ...string) (io.ReadCloser, error) {
	return v.volumeOut(ctx, "ReadFilesFromVolume", &driverv1.VolumeDataRequest{Driver: v.d.handle, Volume: volume, Paths: paths})
}

// volumeOut opens the archive and reads up to its first byte, so that an
// error the plugin meets before it (an unknown volume, a path outside it)
// is the call's. A stream that fails later fails a Read, never ends early.
func (v clientVolumeData) volumeOut(ctx context.Context, op string, req *driverv1.VolumeDataRequest) (io.ReadCloser, error) {
	if err := orchestra.ValidateVolumeName(req.GetVolume()); err != nil {
		return nil, fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, err)
	}
	conn, stop, err := v.d.client.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_VolumeOut{VolumeOut: req}})
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %s: %w", v.d.client.name, op, err)
	}
	fr := newFrameReader(conn)
	for fr.left == 0 && fr.err == nil {
		fr.next()
	}
	if fr.err != nil && fr.err != io.EOF {
		stop()
		conn.Close()
		return nil, v.d.wrap(op, fr.err)
	}
	return &archiveReader{fr: fr, conn: conn, stop: stop, wrap: func(err error) error { return v.d.wrap(op, err) }}, nil
}

// archiveReader is a tar archive coming from the plugin.
type archiveReader struct {
	fr   *frameReader
	conn io.Closer
	stop func() bool
	wrap func(error) error
}

func (a *archiveReader) Read(p []byte) (int, error) {
	n, err := a.fr.Read(p)
	if err != nil && err != io.EOF {
		err = a.wrap(err)
	}
	return n, err
}

// Close ends the archive; one not read to its end stops the plugin's copy.
func (a *archiveReader) Close() error {
	a.stop()
	return a.conn.Close()
}
