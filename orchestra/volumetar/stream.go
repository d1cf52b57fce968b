package volumetar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Limits on what one entry may declare. Names follow Linux's PATH_MAX and
// NAME_MAX, which no file of a real volume exceeds. MaxHeaderBytes bounds
// every header block of one entry together (PAX records, GNU long names, the
// padding of the entry before it and its own block), and it is enforced
// while archive/tar reads them, so a hostile PAX record is refused before it
// is buffered (archive/tar alone would buffer up to 1 MiB of it).
const (
	MaxNameBytes      = 4096
	MaxComponentBytes = 255
	MaxHeaderBytes    = 64 << 10
	// maxLinkNameBytes bounds the names of the links remembered from one
	// stream, so a stream of millions of symlinks cannot grow memory
	// without end.
	maxLinkNameBytes = 16 << 20
)

var (
	// ErrUnsafeEntry is wrapped by every refusal of an entry for what it
	// would do to the filesystem; the error names the entry.
	ErrUnsafeEntry = errors.New("unsafe tar entry")
	// ErrTruncated is wrapped when a stream ends mid-entry or without its
	// end-of-archive marker.
	ErrTruncated = errors.New("tar archive truncated")

	errHeaderTooLarge = errors.New("entry headers too large")
)

// recorder sits between archive/tar and the stream's source. While a header
// is read it bounds the bytes read and keeps them, so the size limit holds
// before archive/tar buffers anything, the end-of-archive marker can be
// checked, and Check can forward exactly the bytes it validated.
type recorder struct {
	r     io.Reader
	buf   []byte
	keep  bool // keep the bytes read
	limit int  // if > 0, refuse to read past this many kept bytes
}

func (c *recorder) Read(p []byte) (int, error) {
	if c.limit > 0 {
		room := c.limit - len(c.buf)
		if room <= 0 {
			return 0, errHeaderTooLarge
		}
		if len(p) > room {
			p = p[:room]
		}
	}
	n, err := c.r.Read(p)
	if c.keep {
		c.buf = append(c.buf, p[:n]...)
	}
	return n, err
}

// take hands over the kept bytes. They stay valid until the next Read.
func (c *recorder) take() []byte {
	b := c.buf
	c.buf = c.buf[:0]
	return b
}

// stream reads and validates the entries of one tar stream; Extract and
// Check share it so that they refuse exactly the same headers.
type stream struct {
	rec      recorder
	tr       *tar.Reader
	v        validator
	keepData bool // keep data bytes too (Check forwards them)
	count    int
	last     string // the last good entry's name, to place errors
}

func newStream(r io.Reader, keepData bool) *stream {
	s := &stream{rec: recorder{r: r}, keepData: keepData}
	s.tr = tar.NewReader(&s.rec)
	s.v.links = map[string]struct{}{}
	return s
}

// next reads and validates the next entry's headers, returning the header
// and its cleaned name. It returns io.EOF only after a complete
// end-of-archive marker: archive/tar also returns io.EOF for a stream cut at
// an entry boundary or after one zero block, which would pass a truncated
// archive off as a whole one.
func (s *stream) next() (*tar.Header, string, error) {
	s.rec.buf = s.rec.buf[:0]
	s.rec.keep, s.rec.limit = true, MaxHeaderBytes
	hdr, err := s.tr.Next()
	s.rec.keep, s.rec.limit = s.keepData, 0
	s.count++
	switch {
	case err == io.EOF:
		if !endMarker(s.rec.buf) {
			return nil, "", fmt.Errorf("%w: no end-of-archive marker at entry %s", ErrTruncated, s.where())
		}
		return nil, "", io.EOF
	case errors.Is(err, errHeaderTooLarge):
		return nil, "", fmt.Errorf("%w %s: headers over %d bytes", ErrUnsafeEntry, s.where(), MaxHeaderBytes)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, "", fmt.Errorf("%w: ends inside the header of entry %s: %w", ErrTruncated, s.where(), err)
	case err != nil && (hdr == nil || !errors.Is(err, tar.ErrInsecurePath)):
		return nil, "", fmt.Errorf("read tar header of entry %s: %w", s.where(), err)
	}
	name, verr := s.v.check(hdr)
	if verr != nil {
		return nil, "", fmt.Errorf("%w %s: %w", ErrUnsafeEntry, quote(hdr.Name), verr)
	}
	if err != nil { // tar.ErrInsecurePath for a name check accepted
		return nil, "", fmt.Errorf("tar entry %s: %w", quote(hdr.Name), err)
	}
	s.last = hdr.Name
	return hdr, name, nil
}

// dataErr explains an error met while reading the data of entry name.
func dataErr(name string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: ends inside the data of %s: %w", ErrTruncated, quote(name), err)
	}
	return fmt.Errorf("read data of %s: %w", quote(name), err)
}

// where places the entry being read, by number, when its header could
// not be parsed.
func (s *stream) where() string {
	if s.last == "" {
		return fmt.Sprintf("#%d", s.count)
	}
	return fmt.Sprintf("#%d (after %s)", s.count, quote(s.last))
}

// endMarker reports whether the bytes read by the last Next end with the
// two zero blocks of a complete archive. They are preceded only by the
// previous entry's padding, which is shorter than a block, so fewer than
// 1024 bytes means the marker is incomplete.
func endMarker(b []byte) bool {
	if len(b) < 1024 {
		return false
	}
	for _, c := range b[len(b)-1024:] {
		if c != 0 {
			return false
		}
	}
	return true
}

// quote quotes a name for an error, cut so that a long hostile name does
// not flood logs.
func quote(name string) string {
	const max = 200
	if len(name) > max {
		return fmt.Sprintf("%q…(%d bytes)", name[:max], len(name))
	}
	return fmt.Sprintf("%q", name)
}

// validator holds the rules that need no filesystem. It remembers the links
// (symlinks and hard links, which may be links to symlinks) that the stream
// made, so that no later entry writes through one: what a link points to is
// decided by the archive's author, never by the root.
type validator struct {
	links     map[string]struct{}
	linkBytes int
}

// check validates h and returns its cleaned name; the error gives the
// reason only, the caller names the entry.
func (v *validator) check(h *tar.Header) (string, error) {
	if err := checkType(h); err != nil {
		return "", err
	}
	if h.Typeflag == tar.TypeXGlobalHeader {
		return "", nil // metadata only; its name names nothing
	}
	name, err := checkName(h.Name)
	if err != nil {
		return "", err
	}
	if name == "." && h.Typeflag != tar.TypeDir {
		return "", errors.New("names the root itself")
	}
	if l := v.through(name); l != "" {
		return "", fmt.Errorf("its path goes through %q, a link made earlier in this archive", l)
	}
	if err := v.checkLinkname(h, name); err != nil {
		return "", err
	}
	return name, v.record(h, name)
}

// checkType allows only the types a volume needs. Device nodes and fifos
// could give a task access to the host's devices or hang a reader; sparse
// files expand to any size from a few bytes; other types are refused
// rather than guessed at.
func checkType(h *tar.Header) error {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeXGlobalHeader:
	case tar.TypeChar, tar.TypeBlock:
		return errors.New("device node")
	case tar.TypeFifo:
		return errors.New("fifo")
	case tar.TypeGNUSparse:
		return errors.New("sparse file")
	default:
		return fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return errors.New("sparse file")
		}
	}
	if h.Size != 0 && h.Typeflag != tar.TypeReg {
		return fmt.Errorf("a %s that declares %d bytes of data", typeName(h.Typeflag), h.Size)
	}
	return nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	}
	return fmt.Sprintf("type %q entry", t)
}

// checkName returns the cleaned form of a relative name that stays inside
// the root.
func checkName(raw string) (string, error) {
	if err := checkString("name", raw); err != nil {
		return "", err
	}
	if raw == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(raw, "/") {
		return "", errors.New("absolute name")
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", errors.New(`name climbs out of the root with ".."`)
	}
	for _, part := range strings.Split(name, "/") {
		if len(part) > MaxComponentBytes {
			return "", fmt.Errorf("a path component of %d bytes, over the %d-byte limit", len(part), MaxComponentBytes)
		}
	}
	return name, nil
}

func checkString(what, s string) error {
	if len(s) > MaxNameBytes {
		return fmt.Errorf("%s of %d bytes, over the %d-byte limit", what, len(s), MaxNameBytes)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("NUL byte in %s", what)
	}
	return nil
}

// checkLinkname checks the target of a symlink (anything but over-long or
// NUL; it is stored, never followed) or of a hard link (an existing entry
// inside the root, reached without going through the stream's links).
func (v *validator) checkLinkname(h *tar.Header, name string) error {
	switch h.Typeflag {
	case tar.TypeSymlink:
		return checkString("symlink target", h.Linkname)
	case tar.TypeLink:
	default:
		return nil
	}
	if err := checkString("hard link target", h.Linkname); err != nil {
		return err
	}
	switch target := path.Clean(h.Linkname); {
	case h.Linkname == "":
		return errors.New("hard link without a target")
	case strings.HasPrefix(h.Linkname, "/"):
		return fmt.Errorf("hard link to absolute path %s", quote(h.Linkname))
	case target == ".." || strings.HasPrefix(target, "../"):
		return fmt.Errorf("hard link to %s, outside the root", quote(h.Linkname))
	case target == "." || target == name:
		return fmt.Errorf("hard link to %s, the root or itself", quote(h.Linkname))
	case v.through(target) != "":
		return fmt.Errorf("hard link target goes through %q, a link made earlier in this archive", v.through(target))
	}
	return nil
}

// through returns the parent of name that is a link made by this stream, or
// "".
func (v *validator) through(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		if _, ok := v.links[name[:i]]; ok {
			return name[:i]
		}
	}
	return ""
}

// record notes a link made by h, or forgets one that h replaces (Extract
// removes what is at a name before it writes there).
func (v *validator) record(h *tar.Header, name string) error {
	_, known := v.links[name]
	if h.Typeflag != tar.TypeSymlink && h.Typeflag != tar.TypeLink {
		if known {
			delete(v.links, name)
			v.linkBytes -= len(name)
		}
		return nil
	}
	if known {
		return nil
	}
	if v.linkBytes+len(name) > maxLinkNameBytes {
		return fmt.Errorf("more than %d bytes of link names in one archive", maxLinkNameBytes)
	}
	v.links[name] = struct{}{}
	v.linkBytes += len(name)
	return nil
}
