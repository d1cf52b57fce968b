package docker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// frame is one log frame as the engine sends it.
type frame struct {
	stream  byte
	payload string
}

func encodeFrames(frames []frame) []byte {
	var b bytes.Buffer
	for _, f := range frames {
		var h [frameHeaderLen]byte
		h[0] = f.stream
		binary.BigEndian.PutUint32(h[4:], uint32(len(f.payload)))
		b.Write(h[:])
		b.WriteString(f.payload)
	}
	return b.Bytes()
}

func demuxAll(t *testing.T, frames []frame, repair, final bool) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := newDemux(&out, &errb, repair).copy(bytes.NewReader(encodeFrames(frames)), final); err != nil {
		t.Fatalf("copy: %v", err)
	}
	return out.String(), errb.String()
}

// TestDemuxSplitLines feeds the frames a 20.10 engine sends for long lines
// (captured from the engine: a 20,000-byte line is a 16,384-byte frame and
// a 3,616-byte one, neither with a newline) and checks the output with and
// without repair, complete or not.
func TestDemuxSplitLines(t *testing.T) {
	piece := strings.Repeat("a", splitSize)
	rest := strings.Repeat("b", 20000-splitSize)
	out := func(p string) frame { return frame{streamStdout, p} }
	errf := func(p string) frame { return frame{streamStderr, p} }
	tests := []struct {
		name           string
		frames         []frame
		stdout, stderr string // repaired, final
		partial        string // repaired stdout, not final (a running task, a follow stream)
	}{
		{name: "short lines", frames: []frame{out("a\n"), errf("e\n"), out("tail")},
			stdout: "a\ntail", stderr: "e\n", partial: "a\ntail"},
		{name: "long line at the end", frames: []frame{out(piece), out(rest)},
			stdout: piece + rest + "\n", partial: piece + rest},
		{name: "long line then more", frames: []frame{out(piece), out(rest), out("y\n")},
			stdout: piece + rest + "\ny\n", partial: piece + rest + "\ny\n"},
		{name: "exact multiple then more", frames: []frame{out(piece), out("x\n")},
			stdout: piece + "\nx\n", partial: piece + "\nx\n"},
		{name: "two pieces and a rest", frames: []frame{out(piece), out(piece), out(rest), out("z")},
			stdout: piece + piece + rest + "\nz", partial: piece + piece + rest + "\nz"},
		{name: "exact multiple at the end", frames: []frame{out(piece)},
			stdout: piece + "\n", partial: piece},
		{name: "streams apart", frames: []frame{out(piece), errf(piece), errf(rest), out(rest), errf("e\n"), out("o\n")},
			stdout: piece + rest + "\no\n", stderr: piece + rest + "\ne\n", partial: piece + rest + "\no\n"},
		{name: "short tail after lines is not split", frames: []frame{out("x\n"), out(rest)},
			stdout: "x\n" + rest, partial: "x\n" + rest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr := demuxAll(t, tt.frames, true, true)
			if stdout != tt.stdout || stderr != tt.stderr {
				t.Errorf("repaired: stdout %d bytes %q…, stderr %d bytes; want %d and %d", len(stdout), tail(stdout), len(stderr), len(tt.stdout), len(tt.stderr))
			}
			partial, _ := demuxAll(t, tt.frames, true, false)
			if partial != tt.partial || !strings.HasPrefix(tt.stdout, partial) {
				t.Errorf("not final: stdout %d bytes %q…, want %d bytes, a prefix of the final read", len(partial), tail(partial), len(tt.partial))
			}
			var raw strings.Builder
			for _, f := range tt.frames {
				if f.stream == streamStdout {
					raw.WriteString(f.payload)
				}
			}
			if plain, _ := demuxAll(t, tt.frames, false, true); plain != raw.String() {
				t.Errorf("without repair the payloads changed: %d bytes, want %d", len(plain), raw.Len())
			}
		})
	}
}

func tail(s string) string { return s[max(0, len(s)-8):] }

// TestDemuxFollowPrefix cuts the frames of a log after each frame, as a
// follow stream may end early, and checks that the not-final output of
// every prefix is a prefix of the final output of the whole.
func TestDemuxFollowPrefix(t *testing.T) {
	piece := strings.Repeat("p", splitSize)
	frames := []frame{{1, piece}, {1, "rest"}, {2, piece}, {1, "line\n"}, {2, "x\n"}, {1, piece}, {1, "end"}}
	whole, wholeErr := demuxAll(t, frames, true, true)
	for n := range frames {
		out, errOut := demuxAll(t, frames[:n], true, false)
		if !strings.HasPrefix(whole, out) || !strings.HasPrefix(wholeErr, errOut) {
			t.Errorf("after %d frames the output is not a prefix of the final output", n)
		}
	}
	if want := piece + "rest\nline\n" + piece + "end\n"; whole != want {
		t.Errorf("stdout %q…, want %q…", tail(whole), tail(want))
	}
	if want := piece + "\nx\n"; wholeErr != want {
		t.Errorf("stderr %q…, want %q…", tail(wholeErr), tail(want))
	}
}

func TestDemuxErrors(t *testing.T) {
	var out bytes.Buffer
	err := newDemux(&out, &out, true).copy(bytes.NewReader(encodeFrames([]frame{{1, "ok\n"}, {3, "boom"}})), true)
	if err == nil || !strings.Contains(err.Error(), "boom") || out.String() != "ok\n" {
		t.Errorf("engine error frame: %v, output %q", err, out.String())
	}
	cut := encodeFrames([]frame{{1, "whole\n"}, {2, "cut short"}})
	err = newDemux(&out, &out, false).copy(bytes.NewReader(cut[:len(cut)-3]), false)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a stream cut inside a frame: %v, want io.ErrUnexpectedEOF", err)
	}
	err = newDemux(&out, &out, false).copy(bytes.NewReader(encodeFrames([]frame{{7, "x"}})), true)
	if err == nil || !strings.Contains(err.Error(), "unknown stream") {
		t.Errorf("unknown stream: %v", err)
	}
}

func TestLoseSplitNewline(t *testing.T) {
	for v, want := range map[string]bool{"": true, "1.40": true, "1.41": true, "1.42": false, "1.51": false} {
		if got := loseSplitNewline(v); got != want {
			t.Errorf("loseSplitNewline(%q) = %v, want %v", v, got, want)
		}
	}
}
