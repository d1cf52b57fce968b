package volumetar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func goodArchive(t testing.TB) []byte {
	return tarOf(t, reg("a.txt", strings.Repeat("hello", 200)), dirEnt("d/"),
		symlinkEnt("d/l", "../a.txt"), reg("d/b", "x"), hardlinkEnt("h", "a.txt"))
}

func TestTruncatedArchives(t *testing.T) {
	good := goodArchive(t)
	cases := map[string]int{
		"empty stream":                   0,
		"inside the first header":        100,
		"inside data":                    512 + 10,
		"after data, before its padding": 512 + 1000,
		"at an entry boundary":           len(good) - 1024,
		"after one zero block":           len(good) - 512,
		"inside the second zero block":   len(good) - 1,
	}
	for name, cut := range cases {
		t.Run(name, func(t *testing.T) {
			data := good[:cut]
			s := newSandbox(t)
			err := Extract(context.Background(), s.root, bytes.NewReader(data))
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("Extract: err = %v, want ErrTruncated", err)
			}
			out, err := io.ReadAll(Check(bytes.NewReader(data)))
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("Check: err = %v, want ErrTruncated", err)
			}
			if !bytes.HasPrefix(data, out) {
				t.Error("Check's output is not a prefix of its input")
			}
		})
	}
}

func TestCheckForwardsByteForByte(t *testing.T) {
	data := goodArchive(t)
	data = append(data, make([]byte, 10240-len(data)%10240)...) // record padding
	if err := iotest.TestReader(Check(bytes.NewReader(data)), data); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(Check(iotest.OneByteReader(bytes.NewReader(data))))
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("one byte at a time: %d of %d bytes, %v", len(out), len(data), err)
	}
	// The forwarded stream extracts like the original.
	s := newSandbox(t)
	if err := Extract(context.Background(), s.root, Check(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
}

// The bad entry's header, and everything after it, never reaches the
// platform.
func TestCheckWithholdsTheBadEntry(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []ent{reg("ok.txt", "fine"), symlinkEnt("l", "/etc")} {
		h := e.h
		_ = tw.WriteHeader(&h)
		_, _ = tw.Write([]byte(e.body))
	}
	_ = tw.Flush()
	good := buf.Len()
	h := reg("l/passwd", "owned").h
	_ = tw.WriteHeader(&h)
	_, _ = tw.Write([]byte("owned"))
	_ = tw.Close()

	out, err := io.ReadAll(Check(iotest.HalfReader(bytes.NewReader(buf.Bytes()))))
	if !errors.Is(err, ErrUnsafeEntry) || !strings.Contains(err.Error(), `"l/passwd"`) {
		t.Fatalf("err = %v, want ErrUnsafeEntry naming l/passwd", err)
	}
	if len(out) > good || !bytes.Equal(out, buf.Bytes()[:len(out)]) {
		t.Fatalf("forwarded %d bytes, want at most the %d before the bad entry", len(out), good)
	}
}

// Some readers (GNU tar -i) read past the end-of-archive marker; whatever
// is there was never checked.
func TestCheckRefusesDataAfterTheEnd(t *testing.T) {
	data := append(goodArchive(t), rawEntry("/etc/passwd", tar.TypeReg, []byte("x"))...)
	_, err := io.ReadAll(Check(bytes.NewReader(data)))
	if !errors.Is(err, ErrUnsafeEntry) || !strings.Contains(err.Error(), "after the end-of-archive marker") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	data := goodArchive(t)
	_, err := io.ReadAll(Check(io.MultiReader(bytes.NewReader(data[:700]), iotest.ErrReader(boom))))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `"a.txt"`) {
		t.Fatalf("err = %v, want boom naming a.txt", err)
	}
}
