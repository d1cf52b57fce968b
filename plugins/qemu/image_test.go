package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// testImage is a tiny image built offline from the local busybox image,
// with a marker file, a WorkingDir, an Env and a PATH of its own.
const testImage = "pocketci-qemu-test:marker"

const testDockerfile = `FROM busybox:latest
RUN echo hello-from-image > /marker-only-in-image && mkdir -p /app /custom/bin && printf '#!/bin/sh\necho custom-tool\n' > /custom/bin/tool && chmod 755 /custom/bin/tool && ln -s /mnt/share /imglink
WORKDIR /app
ENV IMGVAR=fromimage OVERRIDE=image PATH=/custom/bin:/usr/sbin:/usr/bin:/sbin:/bin
`

// requireDocker skips (or, when ORCHESTRA_REQUIRE_DOCKER=1 or
// ORCHESTRA_REQUIRE_QEMU=1 says the image path must be tested, fails) when
// the Docker CLI and Engine are missing.
func requireDocker(t testing.TB) {
	t.Helper()
	err := exec.Command("docker", "image", "inspect", "busybox:latest").Run()
	if err == nil {
		return
	}
	reason := "the image tests need the Docker Engine with busybox:latest (make images): " + err.Error()
	if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" || os.Getenv("ORCHESTRA_REQUIRE_QEMU") == "1" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// buildTestImage builds testImage offline (no pull) and removes the tag
// when the test ends.
func buildTestImage(t testing.TB) {
	t.Helper()
	cmd := exec.Command("docker", "build", "-q", "-t", testImage, "-")
	cmd.Stdin = strings.NewReader(testDockerfile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", testImage).Run() })
}

// TestImage runs tasks in their own OCI image from the local Docker Engine.
func TestImage(t *testing.T) {
	requireQEMU(t)
	requireDocker(t)
	buildTestImage(t)
	cache := t.TempDir()
	t.Setenv(EnvImageCache, cache)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)
	if _, err := d.ensureVM(ctx); err != nil { // boot outside the timings
		t.Fatal(err)
	}
	run := func(task orchestra.Task) (int, string, string, time.Duration) {
		t.Helper()
		start := time.Now()
		code, out, errs := runTask(t, ctx, d, task)
		return code, out, errs, time.Since(start)
	}

	t.Run("a file only the image has", func(t *testing.T) {
		code, out, errs, first := run(orchestra.Task{ID: "marker-1", Image: testImage, Command: []string{"cat", "/marker-only-in-image"}})
		if code != 0 || out != "hello-from-image\n" {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
		}
		_, _, _, later := run(orchestra.Task{ID: "marker-2", Image: testImage, Command: []string{"cat", "/marker-only-in-image"}})
		_, _, _, bare := run(orchestra.Task{ID: "marker-bare", Command: []string{"cat", "/etc/hostname"}})
		t.Logf("task in the image: first use (unpack) %s, later %s; a task in the guest's userland %s", first.Round(time.Millisecond), later.Round(time.Millisecond), bare.Round(time.Millisecond))
		if code, _, _, _ := run(orchestra.Task{ID: "marker-guest", Command: []string{"test", "-e", "/marker-only-in-image"}}); code == 0 {
			t.Fatal("a task without the image sees the image's file")
		}
	})

	t.Run("config: Env merged, PATH, WorkingDir", func(t *testing.T) {
		code, out, errs, _ := run(orchestra.Task{ID: "config", Image: testImage, Env: map[string]string{"OVERRIDE": "task", "MINE": "1"},
			Command: []string{"sh", "-c", `echo "$IMGVAR $OVERRIDE $MINE $PATH"; pwd; tool`}})
		want := "fromimage task 1 /custom/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/app\ncustom-tool\n"
		if code != 0 || out != want {
			t.Fatalf("exit %d stdout %q (want %q) stderr %q", code, out, want, errs)
		}
	})

	t.Run("writes stay private to the task", func(t *testing.T) {
		if code, _, errs, _ := run(orchestra.Task{ID: "write-a", Image: testImage, Command: []string{"sh", "-c", "echo a > /etc/written && echo a >> /marker-only-in-image"}}); code != 0 {
			t.Fatalf("write: exit %d stderr %q", code, errs)
		}
		code, out, _, _ := run(orchestra.Task{ID: "write-b", Image: testImage, Command: []string{"sh", "-c", "cat /marker-only-in-image; ls /etc/written 2>&1"}})
		if code == 0 || !strings.HasPrefix(out, "hello-from-image\n") || !strings.Contains(out, "No such file") {
			t.Fatalf("second task: exit %d stdout %q, want the image's own files only", code, out)
		}
	})

	t.Run("volumes at their paths", func(t *testing.T) {
		m := orchestra.Mounts{{Name: "img-abs", Path: "/data"}, {Name: "img-rel", Path: "cache"}}
		if code, _, errs, _ := run(orchestra.Task{ID: "vol-w", Image: testImage, Mounts: m, Command: []string{"sh", "-c", "echo abs > /data/f && echo rel > /app/cache/f"}}); code != 0 {
			t.Fatalf("write: exit %d stderr %q", code, errs)
		}
		code, out, errs, _ := run(orchestra.Task{ID: "vol-r", Image: testImage, Mounts: m, Command: []string{"sh", "-c", "cat /data/f ./cache/f"}})
		if code != 0 || out != "abs\nrel\n" {
			t.Fatalf("read: exit %d stdout %q stderr %q", code, out, errs)
		}
		// The guest's own userland sees the same volumes.
		code, out, _, _ = run(orchestra.Task{ID: "vol-guest", Mounts: m, Command: []string{"cat", "./data/f", "./cache/f"}})
		if code != 0 || out != "abs\nrel\n" {
			t.Fatalf("read from the guest userland: exit %d stdout %q", code, out)
		}
	})

	t.Run("absolute symlinks in the image stay inside it", func(t *testing.T) {
		// /imglink -> /mnt/share: resolved in the guest, a volume mounted
		// there would cover the driver's share.
		m := orchestra.Mounts{{Name: "img-link", Path: "/imglink"}}
		code, _, errs, _ := run(orchestra.Task{ID: "link-w", Image: testImage, Mounts: m, Command: []string{"sh", "-c", "echo inside > /imglink/f"}})
		if code != 0 {
			t.Fatalf("write through the link: exit %d stderr %q", code, errs)
		}
		code, out, _, _ := run(orchestra.Task{ID: "link-r", Mounts: m, Command: []string{"cat", "./imglink/f"}})
		if code != 0 || out != "inside\n" {
			t.Fatalf("the volume: exit %d stdout %q, want the task's write", code, out)
		}
		_, mounts, _, err := d.vm.run(ctx, "grep -c ' /mnt/share ' /proc/mounts")
		if err != nil || strings.TrimSpace(mounts) != "1" {
			t.Fatalf("the guest's /mnt/share mounts: %q %v, want the share alone", mounts, err)
		}
	})

	t.Run("user", func(t *testing.T) {
		for user, want := range map[string]string{"nobody": "65534", "1234:50": "1234:50", "": "0"} {
			cmd := "id -u"
			if strings.Contains(want, ":") {
				cmd = `echo "$(id -u):$(id -g)"`
			}
			code, out, errs, _ := run(orchestra.Task{ID: "user-" + user, Image: testImage, User: user, Command: []string{"sh", "-c", cmd}})
			if code != 0 || strings.TrimSpace(out) != want {
				t.Errorf("user %q: exit %d stdout %q stderr %q, want %s", user, code, out, errs, want)
			}
		}
	})

	t.Run("privileged", func(t *testing.T) {
		// Not privileged: Docker's default capabilities (CapBnd a80425fb is
		// what docker run gives), no mounts, a read-only /sys. Privileged:
		// every capability, mounts in the task's own namespace, /sys
		// writable.
		script := `grep CapBnd /proc/self/status | tr -d '\t'
mkdir -p /m && mount -t tmpfs t /m && echo mounted
grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1`
		for _, tt := range []struct {
			privileged bool
			want       string
		}{
			{false, "CapBnd:00000000a80425fb\nro\n"},
			{true, "CapBnd:" + fullCapBnd(t, ctx, d) + "\nmounted\nrw\n"},
		} {
			code, out, errs, _ := run(orchestra.Task{ID: "priv-" + strconv.FormatBool(tt.privileged), Image: testImage, Privileged: tt.privileged,
				Command: []string{"sh", "-c", script}})
			if out != tt.want {
				t.Errorf("privileged %v: exit %d stdout %q stderr %q, want stdout %q", tt.privileged, code, out, errs, tt.want)
			}
		}
	})

	t.Run("a missing image", func(t *testing.T) {
		_, err := d.RunContainer(ctx, orchestra.Task{ID: "missing", Image: "pocketci-no-such-image:nope", Command: []string{"true"}})
		if !errors.Is(err, orchestra.ErrImageNotFound) || !strings.Contains(err.Error(), "pocketci-no-such-image:nope") {
			t.Fatalf("err = %v, want ErrImageNotFound naming the image", err)
		}
		if _, err := d.GetContainer(ctx, "missing"); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("a task whose image is missing is kept: %v", err)
		}
	})

	t.Run("per-task layers are gone, the cache stays", func(t *testing.T) {
		_, mounts, _, err := d.vm.run(ctx, "grep -c pocketci-task /proc/mounts; grep -c ' overlay ' /proc/mounts; true")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Fields(mounts)[0] != "0" || strings.Fields(mounts)[1] != "0" {
			t.Fatalf("the guest still has task layers mounted (tmpfs, overlay counts): %q", mounts)
		}
		entries, _ := os.ReadDir(cache)
		if len(entries) != 1 {
			t.Fatalf("image cache has %d entries, want one unpacked image", len(entries))
		}
		if _, err := os.Stat(filepath.Join(cache, entries[0].Name(), "rootfs", "marker-only-in-image")); err != nil {
			t.Fatalf("the cached image: %v", err)
		}
		if data, _ := os.ReadFile(filepath.Join(cache, entries[0].Name(), "rootfs", "marker-only-in-image")); string(data) != "hello-from-image\n" {
			t.Fatalf("a task's write reached the cache: %q", data)
		}
	})
}
