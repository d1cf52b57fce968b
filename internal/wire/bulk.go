package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// The bulk socket (protocol 1.2) carries a task's stdin and logs beside
// gRPC, as plain bytes on a unix socket in the same private directory: a
// gRPC stream tops out at a quarter of what the socket moves. The framing is
// described with BulkRequest in the proto. bulk_server.go and bulk_client.go
// are its two halves.

// Frame types on a bulk logs connection.
const (
	frameStdout byte = 1
	frameStderr byte = 2
	frameEnd    byte = 3
	frameExit   byte = 4
)

// frameHeader is a frame's type and length.
const frameHeader = 5

// maxBulkRequest bounds the request that opens a bulk connection, and each
// request of a Run stream on one: it may carry a task.
const maxBulkRequest = maxTask + maxTaskSlack

func writeBulkRequest(w io.Writer, req *driverv1.BulkRequest) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("bulk request: %w", err)
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(data)), uint32(len(data)))
	_, err = w.Write(append(buf, data...))
	return err
}

func readBulkRequest(r io.Reader) (*driverv1.BulkRequest, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("bulk request length: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxBulkRequest {
		return nil, fmt.Errorf("bulk request of %d bytes is over the %d limit", size, maxBulkRequest)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("bulk request: %w", err)
	}
	req := &driverv1.BulkRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return nil, fmt.Errorf("bulk request: %w", err)
	}
	return req, nil
}

// maxRunFrame bounds a message of a Run stream on the bulk socket: an
// output event holds at most a chunk.
const maxRunFrame = chunkSize + framing

// writeFrame writes payload after its 4-byte big-endian length, in one
// write.
func writeFrame(w io.Writer, payload []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(payload)))
	bufs := net.Buffers{n[:], payload}
	_, err := bufs.WriteTo(w)
	return err
}

// readFrameSize reads a frame's 4-byte length and checks it against limit.
func readFrameSize(r io.Reader, limit int) (int, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return 0, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > uint32(limit) {
		return 0, fmt.Errorf("a frame of %d bytes is over the %d limit", size, limit)
	}
	return int(size), nil
}
