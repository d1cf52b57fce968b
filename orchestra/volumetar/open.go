package volumetar

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"sync"
)

// Open is Archive of root (or of paths in it) as a reader, for a driver
// whose volumes are directories on this machine. The archive is made as it
// is read, so memory stays bounded whatever the volume's size. Every path
// is checked here, so a path that escapes root (ErrUnsafePath) or does not
// exist (fs.ErrNotExist) is Open's error, not a broken stream later.
//
// The reader is an io.WriterTo: io.Copy from it writes the archive straight
// into the destination, on the caller's goroutine (a plugin serving the
// archive over its socket does); Read makes it on a goroutine of its own,
// through a pipe. Closing the reader stops the archiving.
func Open(ctx context.Context, root string, paths ...string) (io.ReadCloser, error) {
	s, err := openSelection(root, paths)
	if err != nil {
		return nil, err
	}
	return &openArchive{ctx: ctx, sel: s}, nil
}

// readAhead is how much of an archive Read takes from the pipe at once.
const readAhead = 32 << 10

// openArchive is the archive of a selection, made once, by whichever comes
// first: WriteTo, straight into its writer, or Read, through a pipe from a
// goroutine. After a WriteTo or a Close there is no pipe, and Read fails.
type openArchive struct {
	ctx  context.Context
	sel  *selection
	once sync.Once
	pipe *io.PipeReader
	buf  *bufio.Reader // reads pipe ahead of the caller
}

var _ io.WriterTo = (*openArchive)(nil)

// startPipe makes the archive on a goroutine, into a pipe Read takes from.
func (a *openArchive) startPipe() {
	pr, pw := io.Pipe()
	a.pipe, a.buf = pr, bufio.NewReaderSize(pr, readAhead)
	go func() {
		defer a.sel.close()
		pw.CloseWithError(a.sel.write(a.ctx, pw)) // nil: the reader sees EOF
	}()
}

func (a *openArchive) Read(p []byte) (int, error) {
	a.once.Do(a.startPipe)
	if a.pipe == nil {
		return 0, io.ErrClosedPipe
	}
	return a.buf.Read(p)
}

// WriteTo writes the whole archive to w, or what is left of it after
// earlier Reads.
func (a *openArchive) WriteTo(w io.Writer) (int64, error) {
	direct := false
	a.once.Do(func() { direct = true })
	if !direct {
		if a.pipe == nil {
			return 0, io.ErrClosedPipe
		}
		return a.buf.WriteTo(w)
	}
	defer a.sel.close()
	var n int64
	err := a.sel.write(a.ctx, writerFunc(func(p []byte) (int, error) {
		k, err := w.Write(p)
		n += int64(k)
		return k, err
	}))
	return n, err
}

// Close stops the archive: its writer's next write fails and it returns.
func (a *openArchive) Close() error {
	a.once.Do(a.sel.close)
	if a.pipe != nil {
		return a.pipe.Close()
	}
	return nil
}

// writerFunc is a function as an io.Writer.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ReadFiles is Open of the given paths in root, for ReadFilesFromVolume: no
// paths is an archive without entries (its end marker), as pocketci's native
// driver answers, where Open would take the whole volume.
func ReadFiles(ctx context.Context, root string, paths ...string) (io.ReadCloser, error) {
	if len(paths) == 0 {
		return io.NopCloser(bytes.NewReader(make([]byte, 1024))), nil
	}
	return Open(ctx, root, paths...)
}
