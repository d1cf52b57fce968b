package volumetar

import (
	"bufio"
	"bytes"
	"context"
	"io"
)

// readAhead is how much of an archive Open reads ahead of its caller.
const readAhead = 32 << 10

// Open is Archive of root (or of paths in it) as a reader, for a driver
// whose volumes are directories on this machine. The archive is made as it
// is read, so memory stays bounded whatever the volume's size; Open waits
// for its first bytes, and Archive checks every path before it writes, so a
// path that escapes root (ErrUnsafePath) or does not exist
// (fs.ErrNotExist) is Open's error, not a broken stream later. Closing the
// reader stops the archiving.
func Open(ctx context.Context, root string, paths ...string) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Archive(ctx, pw, root, paths...)) // nil: the reader sees EOF
	}()
	br := bufio.NewReaderSize(pr, readAhead)
	// A good archive is never empty: its end marker is 1024 bytes.
	if _, err := br.Peek(1); err != nil {
		_ = pr.Close()
		return nil, err
	}
	return &openArchive{Reader: br, pipe: pr}, nil
}

type openArchive struct {
	*bufio.Reader
	pipe *io.PipeReader
}

// Close stops the archive: its writer's next write fails and it returns.
func (a *openArchive) Close() error { return a.pipe.Close() }

// ReadFiles is Open of the given paths in root, for ReadFilesFromVolume: no
// paths is an archive without entries (its end marker), as pocketci's native
// driver answers, where Open would take the whole volume.
func ReadFiles(ctx context.Context, root string, paths ...string) (io.ReadCloser, error) {
	if len(paths) == 0 {
		return io.NopCloser(bytes.NewReader(make([]byte, 1024))), nil
	}
	return Open(ctx, root, paths...)
}
