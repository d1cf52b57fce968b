package volumetar

import (
	"errors"
	"fmt"
	"io"
)

// Check returns a reader that forwards the tar stream r byte for byte while
// it validates each entry's headers with Extract's rules that need no
// filesystem (names, types, sizes, and entries that go through a link made
// earlier in the stream). Drivers whose volumes live elsewhere put it in
// front of their platform's extraction.
//
// A bad entry's header bytes are withheld: Read returns the bytes before
// it, then an error naming it and wrapping ErrUnsafeEntry, so the platform
// never receives that entry or anything after it. A stream that ends early
// gives an error wrapping ErrTruncated, never io.EOF; bytes after the
// end-of-archive marker must be zero (padding), since some readers would
// read on past the marker and find entries that were never checked.
//
// Check validates the stream as Go's archive/tar reads it. It refuses the
// ambiguities known to make other readers disagree (data on header-only
// entries, sparse files, unknown types, data after the end), but a platform
// that parses tar differently should still extract with its own confinement.
func Check(r io.Reader) io.Reader {
	return &checker{s: newStream(r, true), scratch: make([]byte, 32<<10)}
}

type checkState int

const (
	inHeader checkState = iota
	inData
	afterEnd
)

type checker struct {
	s       *stream
	state   checkState
	name    string // entry whose data is being forwarded
	pending []byte // validated bytes not yet returned
	scratch []byte
	err     error
}

func (c *checker) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.err = c.advance(len(p))
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// advance reads on until it has validated bytes to return (in pending) or
// an error; at most about n data bytes at a time.
func (c *checker) advance(n int) error {
	n = min(n, len(c.scratch))
	switch c.state {
	case inHeader:
		hdr, _, err := c.s.next()
		if err == io.EOF {
			c.state = afterEnd
		} else if err != nil {
			return err // the bad header's bytes stay in the recorder
		} else {
			c.state, c.name = inData, hdr.Name
		}
		c.pending = c.s.rec.take()
		return nil
	case inData:
		_, err := c.s.tr.Read(c.scratch[:n])
		c.pending = c.s.rec.take()
		if err == io.EOF {
			c.state = inHeader
			return nil
		}
		if err != nil {
			return dataErr(c.name, err)
		}
		return nil
	}
	return c.trailer(n)
}

// trailer forwards what follows the end-of-archive marker if it is all
// zeros, as tar writers pad to a record size.
func (c *checker) trailer(n int) error {
	m, err := c.s.rec.r.Read(c.scratch[:n])
	for _, b := range c.scratch[:m] {
		if b != 0 {
			return fmt.Errorf("%w: non-zero data after the end-of-archive marker (last entry %s)",
				ErrUnsafeEntry, quote(c.s.last))
		}
	}
	c.pending = c.scratch[:m]
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("read after the end-of-archive marker: %w", err)
	}
	return nil
}
