package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
	"github.com/jtarchie/pocketci/plugins/qemu/qga"
)

// Guest-side layout. The guest's /init mounts every 9p share at /mnt/<tag>.
const (
	shareTag   = "share"
	guestShare = "/mnt/" + shareTag
	// dirPrefix starts every private directory's name (see Leaks).
	dirPrefix = "pocketci-qemu-"
	// markerFile in a private directory holds the namespace it belongs to.
	markerFile = "namespace"
	// ownerFile holds the pid of the process that made the directory.
	ownerFile = "owner"
	// quitGrace is how long Close waits for qemu after QMP quit before SIGKILL.
	quitGrace = 3 * time.Second
)

// vm is one running qemu process and its agent connection.
type vm struct {
	logger *slog.Logger
	dir    string // this boot's directory: sockets, console log
	share  string // host side of the 9p share: the namespace's directory
	// shareInfo is the share as qemu opened it: qemu keeps the directory
	// itself, so a share removed and made again (another instance of the
	// namespace closed it) is no longer what the guest sees.
	shareInfo os.FileInfo
	images    string // host side of the read-only images share
	cmd       *exec.Cmd
	exited    chan struct{} // closed when the qemu process has exited
	waitErr   error         // valid after exited is closed
	agent     *qga.Client
	guestd    *guestdClient // tasks; connected once the guest is ready
	stderr    *tailBuffer
	accel     string

	stopOnce sync.Once
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// qemuName is the -name value that tags the qemu process with its namespace.
func qemuName(namespace string) string {
	return "pocketci-" + strings.ReplaceAll(namespace, ",", ",,")
}

// sweepOnce removes, once per process, private directories left by driver
// processes that died without closing (qemu itself dies with them through
// Pdeathsig, but a killed process cannot remove its directory).
var sweepOnce sync.Once

func sweepStale(base string, logger *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being created
		}
		pid, err := strconv.Atoi(string(owner))
		if err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); !errors.Is(err, os.ErrNotExist) {
			continue // the owner lives
		}
		if err := os.RemoveAll(dir); err != nil {
			logger.Warn("qemu: remove stale private directory", "dir", dir, "err", err)
			continue
		}
		logger.Info("qemu: removed a stale private directory of a dead driver process", "dir", dir, "pid", pid)
	}
}

// makePrivateDir creates the driver instance's private directory (one
// subdirectory per boot: sockets and the console), short enough for unix
// socket paths, marked with the namespace.
func makePrivateDir(namespace string, logger *slog.Logger) (string, error) {
	base := os.TempDir()
	if len(base) > 60 {
		base = "/tmp"
	}
	sweepOnce.Do(func() { sweepStale(base, logger) })
	short := orchestra.SafeName(orchestra.PathNameRule, namespace)
	if len(short) > 40 {
		short = short[:40]
	}
	dir, err := os.MkdirTemp(base, dirPrefix+short+"-")
	if err != nil {
		return "", fmt.Errorf("create private directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("mark private directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), []byte(namespace), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("mark private directory: %w", err)
	}
	return dir, nil
}

// bootVM starts qemu and waits until the guest agent answers. On failure
// nothing is left behind and the error carries the console's last lines.
func bootVM(ctx context.Context, namespace, privateDir, share string, settings Config, logger *slog.Logger) (*vm, error) {
	cfg, err := settings.resolve()
	if err != nil {
		return nil, err
	}
	accel, key := cfg.accel, ""
	if accel == "auto" {
		accel = "tcg"
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			_ = f.Close()
			if key, err = kvmKeyCached(ctx, cfg.binary); err != nil {
				logger.Debug("qemu: cannot tell the host's KVM memo apart, trying KVM", "err", err)
			}
			if key == "" || !kvmKnownBroken(key) {
				accel = "kvm"
			} else {
				logger.Debug("qemu: KVM is known not to work on this host, using TCG", "memo", kvmMemoPath(key))
			}
		}
	}
	var v *vm
	if accel == "kvm" && cfg.accel == "auto" {
		// A /dev/kvm that opens may still not run a VM: qemu exits, or the
		// guest never runs (on this kind of host: no console output, qemu
		// spinning). A trial bounded by kvmTrialTimeout tells both apart
		// from a slow boot.
		trial, cancel := context.WithTimeout(ctx, kvmTrialTimeout)
		v, err = startVM(trial, namespace, privateDir, share, logger, cfg, accel)
		if err != nil && trial.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: no answer within %s under KVM: %w", errEarlyExit, kvmTrialTimeout, err)
		}
		cancel()
	} else {
		v, err = startVM(ctx, namespace, privateDir, share, logger, cfg, accel)
	}
	if err != nil && errors.Is(err, errSnapshotRestore) {
		// A snapshot that does not restore is dropped; this boot is cold
		// and saves a new one.
		logger.Info("qemu: the boot snapshot did not restore; booting cold", "err", firstLine(err.Error()))
		v, err = startVM(ctx, namespace, privateDir, share, logger, cfg, accel)
	}
	if err != nil && accel == "kvm" && cfg.accel == "auto" && errors.Is(err, errEarlyExit) {
		kvmErr := err
		v, err = startVM(ctx, namespace, privateDir, share, logger, cfg, "tcg")
		if err == nil && key != "" {
			// Only now is KVM to blame (a bad kernel fails both ways). Said
			// once per host: later processes read the memo.
			rememberKVMBroken(key, kvmErr.Error(), logger)
			logger.Info("qemu: KVM cannot boot the guest on this host, TCG can: using TCG from now on (delete the memo to try KVM again)",
				"memo", kvmMemoPath(key), "err", firstLine(kvmErr.Error()))
		}
	}
	return v, err
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// kvmTrialTimeout bounds the first boot under KVM on a host (KVM boots the
// guest in well under a second); a var so tests can shorten it.
var kvmTrialTimeout = 20 * time.Second

// errEarlyExit marks a boot whose qemu process exited on its own, or whose
// KVM trial never answered.
var errEarlyExit = errors.New("qemu exited during boot")

// errSnapshotRestore marks a boot whose snapshot did not restore (the
// snapshot file is removed).
var errSnapshotRestore = errors.New("restore of the boot snapshot failed")

// startVM boots the namespace's VM: restored from the boot snapshot when
// there is one, else cold (and then saved as the snapshot when cfg asks).
func startVM(ctx context.Context, namespace, privateDir, share string, logger *slog.Logger, cfg config, accel string) (_ *vm, err error) {
	start := time.Now()
	dir, err := os.MkdirTemp(privateDir, "vm")
	if err != nil {
		return nil, fmt.Errorf("create boot directory: %w", err)
	}
	v := &vm{logger: logger, dir: dir, share: share, exited: make(chan struct{}),
		stderr: &tailBuffer{max: 4096}, accel: accel, images: cfg.images}
	defer func() {
		if err != nil {
			v.stop()
		}
	}()
	khz, err := v.prepare(cfg)
	if err != nil {
		return v, err
	}
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	appendLine := "console=ttyS0 quiet panic=-1 tsc_early_khz=" + strconv.Itoa(khz) +
		" mitigations=off 8250.nr_uarts=1 pci=off audit=0 cryptomgr.notests random.trust_cpu=on no_timer_check"
	args := v.qemuArgs(namespace, cfg, cpu, appendLine)
	snap, restoring := "", false
	if cfg.snapshot {
		if snap, err = snapshotPath(ctx, cfg, accel, cpu, appendLine); err != nil {
			logger.Debug("qemu: no boot snapshot", "err", err)
			snap = ""
		} else if _, err := os.Stat(snap); err == nil && incomingArg(snap) != "" {
			args = append(args, "-incoming", incomingArg(snap))
			restoring = true
		}
	}
	if err := v.launch(cfg.binary, args); err != nil {
		return v, err
	}
	bootCtx, cancel := context.WithTimeout(ctx, cfg.bootTimeout)
	defer cancel()
	// A qemu that exits ends the wait at once.
	go func() {
		select {
		case <-v.exited:
			cancel()
		case <-bootCtx.Done():
		}
	}()
	if restoring {
		err = v.restore(bootCtx, snap, start)
	} else {
		err = v.coldBoot(ctx, bootCtx, snap, cfg.bootTimeout)
	}
	if err != nil {
		return v, fmt.Errorf("boot the guest (%s): %w%s", accel, err, v.diagnostics())
	}
	how := "cold"
	if restoring {
		how = "restored from the boot snapshot"
	}
	logger.Info("qemu: guest ready", "accel", accel, "boot", time.Since(start).Round(time.Millisecond), "how", how)
	return v, nil
}

// prepare writes the guest's scripts into the share and makes the image
// cache; it returns the host's TSC frequency for the kernel line.
func (v *vm) prepare(cfg config) (khz int, err error) {
	if err := writeGuestScripts(filepath.Join(v.share, ".pocketci"), cfg.guestd); err != nil {
		return 0, err
	}
	if v.shareInfo, err = os.Stat(v.share); err != nil {
		return 0, fmt.Errorf("the namespace's directory: %w", err)
	}
	if khz, err = hostTSCkHz(); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(v.images, 0o755); err != nil {
		return 0, fmt.Errorf("image cache: %w", err)
	}
	return khz, nil
}

// qemuArgs is qemu's command line: a microvm with the guest agent, guestd
// and QMP on sockets in v.dir, the share and the image cache over 9p.
func (v *vm) qemuArgs(namespace string, cfg config, cpu, appendLine string) []string {
	return []string{
		"-name", qemuName(namespace),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-M", "microvm,x-option-roms=off", "-accel", v.accel, "-cpu", cpu,
		"-smp", strconv.Itoa(cfg.cpus), "-m", strconv.Itoa(cfg.memoryMiB),
		"-kernel", cfg.kernel, "-initrd", cfg.initrd, "-append", appendLine,
		"-serial", "file:" + v.consolePath(), "-no-reboot",
		"-chardev", "socket,id=qga0,path=" + v.qgaPath() + ",server=on,wait=off",
		"-device", "virtio-serial-device", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
		"-chardev", "socket,id=gd0,path=" + v.guestdPath() + ",server=on,wait=off",
		"-device", "virtserialport,chardev=gd0,name=" + guestproto.PortName,
		"-chardev", "socket,id=qmp0,path=" + v.qmpPath() + ",server=on,wait=off", "-mon", "chardev=qmp0,mode=control",
		"-fsdev", "local,id=fs0,path=" + strings.ReplaceAll(v.share, ",", ",,") + ",security_model=none",
		"-device", "virtio-9p-device,fsdev=fs0,mount_tag=" + shareTag,
		// Unpacked task images, read-only, mounted by /init at /mnt/images.
		"-fsdev", "local,id=fs1,path=" + strings.ReplaceAll(v.images, ",", ",,") + ",security_model=none,readonly=on",
		"-device", "virtio-9p-device,fsdev=fs1,mount_tag=" + imagesTag,
	}
}

// launch starts qemu. It dies with the plugin (Pdeathsig) and stays out of
// the plugin's process group, so a terminal's ^C reaches it only through
// us; v.exited closes when it exits.
func (v *vm) launch(binary string, args []string) error {
	v.cmd = exec.Command(binary, args...)
	v.cmd.Stdout = v.stderr
	v.cmd.Stderr = v.stderr
	v.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := v.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	v.logger.Debug("qemu: started", "pid", v.cmd.Process.Pid, "accel", v.accel, "dir", v.dir)
	return nil
}

// restore resumes a VM started from the boot snapshot snap and connects to
// it; a snapshot that does not restore is removed.
func (v *vm) restore(ctx context.Context, snap string, start time.Time) error {
	err := v.resume(ctx)
	resumed := time.Since(start)
	if err == nil {
		err = v.connectAgent(ctx)
	}
	synced := time.Since(start)
	if err == nil {
		err = v.remount(ctx)
	}
	remounted := time.Since(start)
	if err == nil {
		err = v.connectGuestd(ctx)
	}
	v.logger.Debug("qemu: restore steps", "resumed", resumed, "agent", synced, "remounted", remounted, "daemon", time.Since(start))
	if err != nil {
		if rerr := os.Remove(snap); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			v.logger.Warn("qemu: remove a boot snapshot that does not restore", "path", snap, "err", rerr)
		}
		return fmt.Errorf("%w: %w", errSnapshotRestore, err)
	}
	return nil
}

// coldBoot waits for a freshly booted guest, sets it up, saves the boot
// snapshot snap (when not empty) and connects to guestd. callerCtx tells a
// cancelled boot from one that timed out after bootTimeout.
func (v *vm) coldBoot(callerCtx, ctx context.Context, snap string, bootTimeout time.Duration) error {
	if err := v.connectAgent(ctx); err != nil {
		// A dying qemu resets the socket a moment before it is reaped.
		select {
		case <-v.exited:
		case <-time.After(500 * time.Millisecond):
		}
		select {
		case <-v.exited:
			return fmt.Errorf("%w: %v", errEarlyExit, v.waitErr)
		default:
		}
		if callerCtx.Err() != nil {
			return callerCtx.Err()
		}
		return fmt.Errorf("no answer from the guest agent within %s: %w", bootTimeout, err)
	}
	if err := v.runOK(ctx, "set up the guest", setupScript); err != nil {
		return err
	}
	if snap != "" {
		if err := v.save(ctx, snap, v.logger); err != nil {
			v.logger.Info("qemu: could not save a boot snapshot; boots stay cold", "err", err)
			if err := v.remount(ctx); err != nil {
				return fmt.Errorf("after a failed snapshot: %w", err)
			}
		}
	}
	// Connected after the save: a snapshot holds the daemon, not a session.
	return v.connectGuestd(ctx)
}

func (v *vm) consolePath() string { return filepath.Join(v.dir, "console.log") }
func (v *vm) qgaPath() string     { return filepath.Join(v.dir, "qga.sock") }
func (v *vm) qmpPath() string     { return filepath.Join(v.dir, "qmp.sock") }
func (v *vm) guestdPath() string  { return filepath.Join(v.dir, "guestd.sock") }

// connectGuestd connects to the guest's task daemon (started by setupScript).
func (v *vm) connectGuestd(ctx context.Context) error {
	g, err := dialGuestd(ctx, v.guestdPath())
	if err != nil {
		return err
	}
	v.guestd = g
	return nil
}

// connectAgent dials the agent's socket as soon as qemu created it and syncs;
// qemu holds the request until qemu-ga opens its port in the guest.
func (v *vm) connectAgent(ctx context.Context) error {
	var agent *qga.Client
	for {
		// qemu binds the socket a moment before it listens: retry until then.
		var err error
		if agent, err = qga.Dial(ctx, v.qgaPath()); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent socket: %w (last: %w)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := agent.Sync(ctx); err != nil {
		_ = agent.Close()
		return err
	}
	v.agent = agent
	return nil
}

// diagnostics is the console's and qemu's last lines, for boot errors.
func (v *vm) diagnostics() string {
	var b strings.Builder
	if console := tailFile(v.consolePath(), 20); console != "" {
		b.WriteString("\n--- guest console (last lines) ---\n" + console)
	}
	if s := v.stderr.String(); s != "" {
		b.WriteString("\n--- qemu output ---\n" + s)
	}
	return b.String()
}

// tailFile returns the last n lines of a file, or "".
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > 64<<10 {
		data = data[len(data)-64<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// alive reports whether qemu is still running.
func (v *vm) alive() bool {
	select {
	case <-v.exited:
		return false
	default:
		return true
	}
}

// shareReplaced reports whether the share directory the VM exports is no
// longer the namespace's directory (removed, or removed and made again).
func (v *vm) shareReplaced() bool {
	fi, err := os.Stat(v.share)
	return err != nil || !os.SameFile(fi, v.shareInfo)
}

// waitExit reports whether qemu exits within d.
func (v *vm) waitExit(d time.Duration) bool {
	select {
	case <-v.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// stop quits qemu (QMP quit, SIGKILL after a grace period), waits for it and
// removes the boot's directory (not the share). It is idempotent.
func (v *vm) stop() {
	v.stopOnce.Do(func() {
		if v.agent != nil {
			_ = v.agent.Close()
		}
		if v.guestd != nil {
			v.guestd.close()
		}
		if v.cmd != nil && v.cmd.Process != nil {
			if v.alive() {
				if err := qmpQuit(v.qmpPath()); err != nil {
					v.logger.Debug("qemu: QMP quit failed, killing", "err", err)
				}
				select {
				case <-v.exited:
				case <-time.After(quitGrace):
					v.logger.Warn("qemu: did not quit in time, killing", "pid", v.cmd.Process.Pid)
				}
			}
			if v.alive() {
				_ = v.cmd.Process.Kill()
				<-v.exited
			}
		}
		if err := os.RemoveAll(v.dir); err != nil {
			v.logger.Warn("qemu: remove boot directory", "dir", v.dir, "err", err)
		}
	})
}
