package wire

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/jtarchie/pocketci/internal/bulk"

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
	return v.driver.cleanup(&v.cleaned, "CleanupVolume", func() error {
		_, err := v.driver.client.rpc.CleanupVolume(ctx, v.ref)
		return err
	})
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
		return v.d.client.fail(op, err)
	}
	req := &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_VolumeIn{VolumeIn: &driverv1.VolumeDataRequest{Driver: v.d.handle, Volume: volume}}}
	conn, stop, err := v.d.client.dialBulk(ctx, req)
	if err != nil {
		return v.d.client.fail(op, err)
	}
	defer stop()
	defer conn.Close()
	// A broken connection is werr: the plugin already answered, below.
	werr := sendStream(bulk.NewWriter(conn, false), r)
	outcome, err := bulk.ReadFrames(conn, func(kind byte, _ []byte) error {
		return v.d.client.invalidReply(op, "frame type %d before the end", kind)
	})
	switch {
	case err != nil && werr != nil && ctx.Err() == nil:
		return fmt.Errorf("plugin %s: %s: send the archive: %w", v.d.client.name, op, werr)
	case err != nil:
		return v.d.client.streamError(ctx, op, err)
	}
	return v.d.wrap(op, outcome)
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
		return nil, v.d.client.fail(op, err)
	}
	conn, stop, err := v.d.client.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_VolumeOut{VolumeOut: req}})
	if err != nil {
		return nil, v.d.client.fail(op, err)
	}
	fr := bulk.NewReader(conn)
	if err := fr.Peek(); err != nil && err != io.EOF {
		stop()
		conn.Close()
		return nil, v.d.wrap(op, err)
	}
	return &archiveReader{fr: fr, conn: conn, stop: stop, wrap: func(err error) error { return v.d.wrap(op, err) }}, nil
}

// archiveReader is a tar archive coming from the plugin.
type archiveReader struct {
	fr   *bulk.Reader
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
