package host

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTrustPaths: symlinks are followed and their targets checked, and
// SHA256SUMS lines are read as sha256sum writes them.
func TestTrustPaths(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string // in the refusal; empty: runs
	}{
		{"symlink to a trusted file", func(t *testing.T, dir string) {
			target := install(t, privateDir(t), "real", 0o755)
			os.Symlink(target, filepath.Join(dir, Prefix+"p"))
		}, ""},
		{"symlink into a world-writable directory", func(t *testing.T, dir string) {
			open := filepath.Join(privateDir(t), "open")
			os.Mkdir(open, 0o777)
			os.Chmod(open, 0o777)
			target := install(t, open, "real", 0o755)
			os.Symlink(target, filepath.Join(dir, Prefix+"p"))
		}, "writable by group or others"},
		{"symlink into a group-writable directory above", func(t *testing.T, dir string) {
			above := filepath.Join(privateDir(t), "above")
			os.MkdirAll(filepath.Join(above, "below"), 0o755)
			os.Chmod(above, 0o775)
			target := install(t, filepath.Join(above, "below"), "real", 0o755)
			os.Symlink(target, filepath.Join(dir, Prefix+"p"))
		}, "directory above the plugin"},
		{"./name in SHA256SUMS", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			sum, _ := fileSHA256(filepath.Join(dir, Prefix+"p"))
			os.WriteFile(filepath.Join(dir, SumsFile), []byte(sum+"  ./"+Prefix+"p\n"), 0o644)
		}, ""},
		{"identical duplicate lines", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			sum, _ := fileSHA256(filepath.Join(dir, Prefix+"p"))
			os.WriteFile(filepath.Join(dir, SumsFile), []byte(sum+"  "+Prefix+"p\n"+sum+" *"+Prefix+"p\n"), 0o644)
		}, ""},
		{"conflicting duplicate lines", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			sum, _ := fileSHA256(filepath.Join(dir, Prefix+"p"))
			os.WriteFile(filepath.Join(dir, SumsFile), []byte(strings.Repeat("ab", 32)+"  "+Prefix+"p\n"+sum+"  "+Prefix+"p\n"), 0o644)
		}, "lines 1 and 2 pin"},
		{"SHA256SUMS writable by others", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			writeSums(t, dir, "p", "")
			os.Chmod(filepath.Join(dir, SumsFile), 0o666)
		}, "writable by group or others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			tt.setup(t, dir)
			h, _ := newHost(t, dir)
			p, err := h.Plugin("p")
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Info(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Info: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Info: %v, want a refusal containing %q", err, tt.want)
			}
		})
	}
}

// secondUser creates a user for the test and removes it afterwards. Only
// root can: CI runs as root.
func secondUser(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a second user needs root (CI runs as root)")
	}
	name := fmt.Sprintf("orch%d", time.Now().UnixNano()%1e8)
	if out, err := exec.Command("useradd", "--no-create-home", "--system", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// TestTrustOwners: a plugin, its directory, a directory above it, or its
// symlink's target owned by another user is refused.
func TestTrustOwners(t *testing.T) {
	uid := secondUser(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"binary", func(t *testing.T, dir string) {
			os.Chown(install(t, dir, "p", 0o755), uid, uid)
		}},
		{"plugin directory", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			os.Chown(dir, uid, uid)
		}},
		{"directory above", func(t *testing.T, dir string) {
			inner := filepath.Join(dir, "inner")
			os.Mkdir(inner, 0o755)
			install(t, inner, "p", 0o755)
			os.Chown(dir, uid, uid)
		}},
		{"symlink target", func(t *testing.T, dir string) {
			target := install(t, privateDir(t), "real", 0o755)
			os.Chown(target, uid, uid)
			os.Symlink(target, filepath.Join(dir, Prefix+"p"))
		}},
		{"SHA256SUMS", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			writeSums(t, dir, "p", "")
			os.Chown(filepath.Join(dir, SumsFile), uid, uid)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			tt.setup(t, dir)
			pdir := dir
			if _, err := os.Stat(filepath.Join(dir, "inner")); err == nil {
				pdir = filepath.Join(dir, "inner")
			}
			h, _ := newHost(t, pdir)
			p, err := h.Plugin("p")
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Info(context.Background())
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("owned by uid %d", uid)) {
				t.Fatalf("Info: %v, want a refusal naming owner uid %d", err, uid)
			}
		})
	}
}

// TestPinnedFileCannotBeSwapped swaps the pinned binary for another file
// while the host starts it, 40 times: the other file never runs.
func TestPinnedFileCannotBeSwapped(t *testing.T) {
	dir := privateDir(t)
	good := install(t, dir, "pinned", 0o755)
	writeSums(t, dir, "pinned", "")
	marker := filepath.Join(t.TempDir(), "evil-ran")
	evil := filepath.Join(dir, "evil")
	os.WriteFile(evil, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	goodCopy := filepath.Join(dir, "good")
	data, _ := os.ReadFile(good)
	os.WriteFile(goodCopy, data, 0o755)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmp := filepath.Join(dir, "swap")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src := goodCopy
			if i%2 == 1 {
				src = evil
			}
			b, _ := os.ReadFile(src)
			os.WriteFile(tmp, b, 0o755)
			os.Rename(tmp, good)
			time.Sleep(time.Millisecond)
		}
	}()
	ran, refused := 0, 0
	for i := 0; i < 40; i++ {
		h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Plugin("pinned")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Info(context.Background()); err != nil {
			if !strings.Contains(err.Error(), "pins") {
				t.Errorf("try %d: %v", i, err)
			}
			refused++
		} else {
			ran++
		}
		h.Close()
	}
	close(stop)
	wg.Wait()
	t.Logf("40 starts while the file was swapped: %d ran the pinned binary, %d refused the swapped one", ran, refused)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the swapped-in file ran")
	}
}
