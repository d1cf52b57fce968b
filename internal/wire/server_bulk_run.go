package wire

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// serveRunBulk serves a Run stream on a bulk connection (protocol 1.3): the
// same stream as on gRPC, as length-prefixed messages on a plain socket,
// which costs a task a fraction of gRPC's per-message work. RunContainer's
// error goes back as a failed event.
func (s *server) serveRunBulk(conn net.Conn, start *driverv1.RunContainerRequest) {
	t := &bulkRunServer{conn: conn, r: bufio.NewReader(conn)}
	if err := s.run(context.Background(), t, start); err != nil {
		_ = t.SendMsg(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Failed{Failed: &driverv1.Outcome{Status: statusBytes(err)}}})
	}
}

// bulkRunServer is the plugin's end of a Run stream on a bulk connection.
// SendMsg is called under runServer's send lock, Recv from one goroutine.
type bulkRunServer struct {
	conn net.Conn
	r    *bufio.Reader
}

func (b *bulkRunServer) Recv() (*driverv1.RunRequest, error) {
	size, err := readFrameSize(b.r, maxBulkRequest)
	if err != nil {
		return nil, err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(b.r, data); err != nil {
		return nil, err
	}
	req := &driverv1.RunRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return nil, fmt.Errorf("run request: %w", err)
	}
	return req, nil
}

// SendMsg writes a RunEvent; an output event built in place (wireChunk) is
// written as is.
func (b *bulkRunServer) SendMsg(m any) error {
	if bm, ok := m.(builtMessage); ok {
		w := bm.built()
		return writeFrame(b.conn, (*w.buf)[:w.end])
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("run stream: cannot send %T", m)
	}
	data, err := proto.Marshal(pm)
	if err != nil {
		return fmt.Errorf("run event: %w", err)
	}
	return writeFrame(b.conn, data)
}
