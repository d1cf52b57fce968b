package main

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestVolumePutGetAndSandbox: a tar put into a volume of a kept namespace is
// what a task there reads and what get gives back; a sandbox runs each line
// of stdin in turn and exits with the last one's code.
func TestVolumePutGetAndSandbox(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	ns := "cli-volume-" + randomHex(3)
	t.Cleanup(func() { _ = cli(t, nil, "clean", "--plugin-dir", dir, ns).Run() })
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	_ = tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 6, Typeflag: tar.TypeReg})
	_, _ = io.WriteString(tw, "world\n")
	_ = tw.Close()

	put := cli(t, nil, "volume", "put", "--plugin-dir", dir, ns, "data")
	put.Stdin = bytes.NewReader(archive.Bytes())
	if out, err := put.CombinedOutput(); err != nil {
		t.Fatalf("volume put: %v: %s", err, out)
	}
	run := cli(t, nil, "run", "--plugin-dir", dir, "--namespace", ns, "-v", "data:data", "--", "cat", "data/hello.txt")
	if out, err := run.Output(); err != nil || string(out) != "world\n" {
		t.Fatalf("a task reads %q (%v), want the file put in", out, err)
	}
	get := cli(t, nil, "volume", "get", "--plugin-dir", dir, ns, "data", "hello.txt")
	out, err := get.Output()
	if err != nil {
		t.Fatalf("volume get: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	h, err := tr.Next()
	body, _ := io.ReadAll(tr)
	if err != nil || h.Name != "hello.txt" || string(body) != "world\n" {
		t.Fatalf("volume get gave %v, %q, %v", h, body, err)
	}

	sb := cli(t, nil, "sandbox", "--plugin-dir", dir, "-e", "GREET=hi")
	sb.Stdin = strings.NewReader("echo $GREET > f\ncat f\nexit 3\n")
	var stdout, stderr bytes.Buffer
	sb.Stdout, sb.Stderr = &stdout, &stderr
	if code := exitCode(sb.Run()); code != 3 || stdout.String() != "hi\n" || !strings.Contains(stderr.String(), "exit 3") {
		t.Fatalf("sandbox: exit %d, stdout %q, stderr %q; want 3, \"hi\\n\" and the failing code named", code, stdout.String(), stderr.String())
	}
}
