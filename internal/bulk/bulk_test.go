package bulk

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFramesRoundTrip(t *testing.T) {
	var b bytes.Buffer
	fw := NewWriter(&b, false)
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	if _, err := fw.Stream(Data).Write(big); err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Stream(Stderr).Write([]byte("err"))
	_ = fw.Exit(-7)
	_ = fw.End(status.Error(codes.NotFound, "gone"))
	var out, errOut int
	var code int64
	outcome, err := ReadFrames(bytes.NewReader(b.Bytes()), func(kind byte, p []byte) error {
		switch kind {
		case Data:
			if len(p) > MaxFrame {
				t.Fatalf("a frame of %d bytes", len(p))
			}
			out += len(p)
		case Stderr:
			errOut += len(p)
		case Exit:
			code, _ = ExitCode(p)
		}
		return nil
	})
	if err != nil || status.Code(outcome) != codes.NotFound || out != len(big) || errOut != 3 || code != -7 {
		t.Fatalf("outcome %v, err %v, %d+%d bytes, exit %d", outcome, err, out, errOut, code)
	}
	if _, err := ReadFrames(bytes.NewReader(b.Bytes()[:b.Len()-1]), func(byte, []byte) error { return nil }); !errors.Is(err, ErrNoEnd) {
		t.Fatalf("a stream cut short: %v, want ErrNoEnd", err)
	}
}

func TestReaderEndsAsTheStreamDid(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  error
		cut  bool
		want func(error) bool
	}{
		{"clean", nil, false, func(err error) bool { return err == nil }},
		{"failed", status.Error(codes.Aborted, "broken"), false, func(err error) bool { return status.Code(err) == codes.Aborted }},
		{"cut short", nil, true, func(err error) bool { return errors.Is(err, ErrNoEnd) }},
	} {
		var b bytes.Buffer
		fw := NewWriter(&b, false)
		_, _ = fw.Stream(Data).Write([]byte("archive"))
		_ = fw.End(tt.end)
		wire := b.Bytes()
		if tt.cut {
			wire = wire[:b.Len()-2]
		}
		r := NewReader(bytes.NewReader(wire))
		got, err := io.ReadAll(r)
		if string(got) != "archive" || !tt.want(err) {
			t.Errorf("%s: read %q, %v", tt.name, got, err)
		}
	}
}
