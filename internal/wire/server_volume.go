package wire

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/jtarchie/pocketci/internal/bulk"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The plugin's half of volume data (its twin is client_volume.go): tar
// archives in and out of a volume, as data frames on a bulk connection.

// serveVolumeIn extracts the archive the host sends into the volume and
// answers with an end frame. An archive whose stream failed fails the call,
// whatever the driver made of the bytes it got.
func (s *Server) serveVolumeIn(conn net.Conn, req *driverv1.VolumeDataRequest) {
	fw := bulk.NewWriter(conn, false)
	vd, _, err := optional[orchestra.VolumeDataAccessor](s, req.GetDriver())
	if err != nil {
		_ = fw.End(toStatus(err))
		return
	}
	in := bulk.NewReader(conn)
	err = s.safely("CopyToVolume", func() error {
		return vd.CopyToVolume(context.Background(), req.GetVolume(), in)
	})
	if err == nil {
		// The driver may return before the archive's end: read on, so that
		// a failed stream is reported as such.
		if _, cerr := io.Copy(io.Discard, in); cerr != nil {
			err = status.Errorf(codes.Aborted, "volume %q: the archive from the host: %v", req.GetVolume(), cerr)
		}
	}
	_ = fw.End(toStatus(err))
}

// serveVolumeOut sends the archive of the volume, or of paths in it, as
// data frames and an end frame.
func (s *Server) serveVolumeOut(conn net.Conn, req *driverv1.VolumeDataRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelOnHangUp(conn, cancel)
	fw := bulk.NewWriter(conn, false)
	vd, _, err := optional[orchestra.VolumeDataAccessor](s, req.GetDriver())
	if err == nil {
		err = s.safely("CopyFromVolume", func() error { return copyVolumeOut(ctx, vd, req, fw.Stream(bulk.Data)) })
	}
	_ = fw.End(toStatus(err))
}

func copyVolumeOut(ctx context.Context, vd orchestra.VolumeDataAccessor, req *driverv1.VolumeDataRequest, w io.Writer) error {
	var rc io.ReadCloser
	var err error
	if req.GetWhole() {
		rc, err = vd.CopyFromVolume(ctx, req.GetVolume())
	} else {
		rc, err = vd.ReadFilesFromVolume(ctx, req.GetVolume(), req.GetPaths()...)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("volume %q: %w", req.GetVolume(), err)
	}
	return nil
}
