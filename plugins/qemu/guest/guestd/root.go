package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// taskRoot is a task's image root: a tmpfs holding the overlay's writable
// layer and the merged root with /proc, /dev, /sys and the volumes.
type taskRoot struct {
	base   string // the tmpfs
	merged string // the task's /
}

// mountRoot mounts the task's root over its image s.Root.
func mountRoot(id uint64, s *guestproto.Start) (*taskRoot, error) {
	return mountRootAt("/run/pocketci-root/"+strconv.FormatUint(id, 10), s)
}

// mountRootAt mounts a root over the image s.Root at base.
func mountRootAt(base string, s *guestproto.Start) (_ *taskRoot, err error) {
	if err := loadOverlay(); err != nil {
		return nil, err
	}
	r := &taskRoot{base: base}
	r.merged = r.base + "/m"
	if err := os.MkdirAll(r.base, 0o755); err != nil {
		return nil, fmt.Errorf("task root: %w", err)
	}
	if err := syscall.Mount("pocketci-task", r.base, "tmpfs", 0, "mode=0755"); err != nil {
		_ = os.Remove(r.base)
		return nil, fmt.Errorf("task root: mount tmpfs: %w", err)
	}
	defer func() {
		if err != nil {
			r.detach()
			_ = os.Remove(r.base)
		}
	}()
	for _, d := range []string{"u", "w", "m"} {
		if err := os.Mkdir(r.base+"/"+d, 0o755); err != nil {
			return nil, fmt.Errorf("task root: %w", err)
		}
	}
	opts := "lowerdir=" + s.Root + ",upperdir=" + r.base + "/u,workdir=" + r.base + "/w"
	if err := syscall.Mount("overlay", r.merged, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("task root: mount the overlay on %s: %w", s.Root, err)
	}
	root, err := openRoot(r.merged)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(root)
	var sysFlags uintptr = syscall.MS_RDONLY // as for a container that is not privileged
	if s.Privileged {
		sysFlags = 0
	}
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
	}{
		{"proc", "/proc", "proc", 0},
		{"/dev", "/dev", "", syscall.MS_BIND | syscall.MS_REC},
		{"sysfs", "/sys", "sysfs", sysFlags},
	}
	for _, b := range s.Binds {
		mounts = append(mounts, struct {
			src, dst, fstype string
			flags            uintptr
		}{b.Src, b.Dst, "", syscall.MS_BIND | syscall.MS_REC})
	}
	for _, m := range mounts {
		// The target is resolved inside the root (an image's absolute
		// symlinks point into the image, not the guest) and mounted
		// through its fd.
		fd, err := mkdirInRoot(root, m.dst)
		if err != nil {
			return nil, fmt.Errorf("task root: %s: %w", m.dst, err)
		}
		err = syscall.Mount(m.src, "/proc/self/fd/"+strconv.Itoa(fd), m.fstype, m.flags, "")
		_ = syscall.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("task root: mount %s at %s: %w", m.src, m.dst, err)
		}
	}
	for _, d := range []string{"/tmp", s.WorkDir} {
		fd, err := mkdirInRoot(root, d)
		if err != nil {
			return nil, fmt.Errorf("task root: %s: %w", d, err)
		}
		_ = syscall.Close(fd)
	}
	return r, nil
}

// detach unmounts the whole tree here (lazily: a task's namespace keeps
// its copy). The mount point stays until the task ended: removing a
// directory detaches what is mounted on it in every namespace, the task's
// too.
func (r *taskRoot) detach() {
	_ = syscall.Unmount(r.base, syscall.MNT_DETACH)
}

var overlay struct {
	once sync.Once
	err  error
}

// loadOverlay loads overlay.ko on the first task that runs in an image.
func loadOverlay() error {
	overlay.once.Do(func() {
		if hasFilesystem("overlay") {
			return
		}
		out, err := exec.Command("/bin/busybox", "insmod", "/lib/modules/overlay.ko").CombinedOutput()
		if !hasFilesystem("overlay") {
			overlay.err = fmt.Errorf("the guest has no overlayfs (rebuild it with guest/build.sh): insmod: %v %s", err, bytes.TrimSpace(out))
		}
	})
	return overlay.err
}

func hasFilesystem(name string) bool {
	data, _ := os.ReadFile("/proc/filesystems")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

// Path resolution inside a task's root: openat2 with RESOLVE_IN_ROOT
// (Linux 5.6) treats the root fd as "/" for "..", absolute paths and
// absolute symlinks alike.
const (
	sysOpenat2    = 437
	resolveInRoot = 0x10
	oPath         = 0x200000
)

type openHow struct {
	flags, mode, resolve uint64
}

// openInRoot opens name as if root were "/".
func openInRoot(root int, name string, flags int) (int, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	how := openHow{flags: uint64(flags | syscall.O_CLOEXEC), resolve: resolveInRoot}
	for {
		fd, _, errno := syscall.Syscall6(sysOpenat2, uintptr(root), uintptr(unsafe.Pointer(p)),
			uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		if errno == syscall.EINTR || errno == syscall.EAGAIN {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// openRoot opens dir as a root for openInRoot.
func openRoot(dir string) (int, error) {
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|oPath|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the task's root %s: %w", dir, err)
	}
	return fd, nil
}

// mkdirInRoot makes the directory name (and its parents) inside root and
// returns an fd on it. A dangling symlink on the way (an image's /var/run
// -> /run) is followed inside root: what it points to is made.
func mkdirInRoot(root int, name string) (int, error) { return mkdirInRootLinks(root, name, 0) }

func mkdirInRootLinks(root int, name string, links int) (int, error) {
	name = path.Clean("/" + name)
	fd, err := openInRoot(root, name, oPath|syscall.O_DIRECTORY)
	if err == nil || !errors.Is(err, syscall.ENOENT) || name == "/" {
		return fd, err
	}
	if target, ok := readlinkInRoot(root, name); ok {
		if links >= 40 {
			return -1, fmt.Errorf("mkdir %s: %w", name, syscall.ELOOP)
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(name), target)
		}
		return mkdirInRootLinks(root, target, links+1)
	}
	parent, err := mkdirInRootLinks(root, path.Dir(name), links)
	if err != nil {
		return -1, err
	}
	defer syscall.Close(parent)
	if err := syscall.Mkdirat(parent, path.Base(name), 0o755); err != nil && !errors.Is(err, syscall.EEXIST) {
		return -1, fmt.Errorf("mkdir %s: %w", name, err)
	}
	return openInRoot(root, name, oPath|syscall.O_DIRECTORY)
}

// readlinkInRoot reads the symlink name inside root; ok is false when name
// is not a symlink.
func readlinkInRoot(root int, name string) (string, bool) {
	fd, err := openInRoot(root, name, oPath|syscall.O_NOFOLLOW)
	if err != nil {
		return "", false
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", false
	}
	buf := make([]byte, 4096)
	empty := [1]byte{}
	n, _, errno := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return "", false
	}
	return string(buf[:n]), true
}

// readInRoot reads the file name inside root.
func readInRoot(root int, name string) ([]byte, error) {
	fd, err := openInRoot(root, name, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// lookPath finds the command the way execvp would, inside root: a name
// with a slash as it is, else the first executable regular file in PATH.
func lookPath(root int, pathEnv, name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if !strings.HasPrefix(dir, "/") {
			continue // relative PATH entries are not searched
		}
		p := path.Join(dir, name)
		fd, err := openInRoot(root, p, oPath)
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		err = syscall.Fstat(fd, &st)
		_ = syscall.Close(fd)
		if err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	return "", &startError{codeNotFound, fmt.Errorf("%s: command not found in PATH %q", name, pathEnv)}
}

// lookupUser turns a task's User into credentials: nil for root, uid[:gid]
// as given (gid defaults to uid), a name from the root's /etc/passwd with
// its groups from /etc/group.
func lookupUser(root int, user string) (*syscall.Credential, error) {
	switch user {
	case "", "root", "0", "0:0":
		return nil, nil
	}
	if strings.Trim(user, "0123456789:") == "" {
		u, g, hasGroup := strings.Cut(user, ":")
		if !hasGroup {
			g = u
		}
		uid, err1 := strconv.ParseUint(u, 10, 32)
		gid, err2 := strconv.ParseUint(g, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("user %q is not uid[:gid]", user)
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	passwd, _ := readInRoot(root, "/etc/passwd")
	for _, f := range colonLines(passwd) {
		if len(f) < 4 || f[0] != user {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("user %q: bad /etc/passwd entry", user)
		}
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		group, _ := readInRoot(root, "/etc/group")
		for _, g := range colonLines(group) {
			if len(g) < 4 {
				continue
			}
			for _, m := range strings.Split(g[3], ",") {
				if id, err := strconv.ParseUint(g[2], 10, 32); err == nil && m == user && uint32(id) != cred.Gid {
					cred.Groups = append(cred.Groups, uint32(id))
				}
			}
		}
		return cred, nil
	}
	return nil, fmt.Errorf("unknown user %q: not in /etc/passwd", user)
}

// colonLines splits a passwd-style file into fields.
func colonLines(data []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.Split(line, ":"))
		}
	}
	return out
}
