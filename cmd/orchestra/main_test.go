package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins holds the orchestra binary and the plugins the tests use, built once.
var bins struct {
	orchestra, native, fake string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orchestra-test-")
	if err != nil {
		panic(err)
	}
	bins.orchestra = filepath.Join(dir, "orchestra")
	bins.native = filepath.Join(dir, "native")
	bins.fake = filepath.Join(dir, "fake")
	for out, pkg := range map[string]string{
		bins.orchestra: ".",
		bins.native:    "../../plugins/native/cmd/pocketci-driver-native",
		bins.fake:      "../../host/testdata/fakeplugin",
	} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pluginDir makes a plugin directory holding bin as pocketci-driver-name.
func pluginDir(t *testing.T, name, bin string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pocketci-driver-"+name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cli returns a command running the CLI with its own native root,
// and nothing from the caller's plugin path.
func cli(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bins.orchestra, args...)
	cmd.Env = append(os.Environ(), "ORCHESTRA_PLUGIN_PATH=", "HOME="+t.TempDir(), "POCKETCI_NATIVE_ROOT="+nativeRoot(t))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// nativeRoot is the test's own directory for native namespaces.
func nativeRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(os.TempDir(), "orchestra-native-"+strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestStderrCarriesOnlyTheTask: at the default log level the CLI's stderr
// holds exactly what the task wrote there, even from a plugin that warns;
// the warnings appear with --log-level.
func TestStderrCarriesOnlyTheTask(t *testing.T) {
	tests := []struct {
		name, plugin, bin, mode string
		args                    []string
		want                    string // exact stderr; empty: check contains
		contains                string
	}{
		{"native", "native", bins.native, "", nil, "e\n", ""},
		{"warning plugin", "native", bins.fake, "misnamed", nil, "e\n", ""},
		{"warning plugin with log level", "native", bins.fake, "misnamed", []string{"--log-level", "warn"}, "", "disagrees with the name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, tt.plugin, tt.bin)
			args := append([]string{"run", "--plugin-dir", dir, "--driver", tt.plugin}, tt.args...)
			args = append(args, "--", "sh", "-c", "echo o; echo e >&2")
			cmd := cli(t, []string{"FAKEPLUGIN_MODE=" + tt.mode})
			cmd.Args = append(cmd.Args[:1], args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}
			if stdout.String() != "o\n" {
				t.Fatalf("stdout = %q", stdout.String())
			}
			if tt.want != "" && stderr.String() != tt.want {
				t.Fatalf("stderr = %q, want exactly %q", stderr.String(), tt.want)
			}
			if tt.contains != "" && !strings.Contains(stderr.String(), tt.contains) {
				t.Fatalf("stderr = %q, want it to contain %q", stderr.String(), tt.contains)
			}
		})
	}
}

// TestOwnFailureIsOneLine: a failure of orchestra itself (a plugin that
// dies at start, with a multi-line stderr) is one line prefixed orchestra:.
func TestOwnFailureIsOneLine(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	script := "#!/bin/sh\necho 'line one' >&2\necho 'line two' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "pocketci-driver-broken"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--driver", "broken", "--", "true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if exitCode(err) != 125 {
		t.Fatalf("exit %d, want 125", exitCode(err))
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "orchestra: ") || !strings.Contains(lines[0], "line two") {
		t.Fatalf("stderr = %q, want one line starting orchestra: with the plugin's last stderr", stderr.String())
	}
}

// children lists the PIDs of pid's child processes.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			var c int
			fmt.Sscan(s, &c)
			out = append(out, c)
		}
	}
	return out
}

// pluginOf waits for the CLI process to have started a plugin and returns
// the plugin's PID.
func pluginOf(t *testing.T, cli int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range children(cli) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); strings.Contains(filepath.Base(exe), "pocketci-driver-") {
				return c
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the CLI started no plugin")
	return 0
}

func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

func waitExit(t *testing.T, cmd *exec.Cmd, limit time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err), time.Since(start)
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("orchestra still running %s later", limit)
		return 0, 0
	}
}

// TestInterruptDuringStart: Ctrl-C while a plugin never completes its
// handshake ends the start at once; the CLI exits 130.
func TestInterruptDuringStart(t *testing.T) {
	dir := pluginDir(t, "slow", bins.fake)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := cli(t, []string{"FAKEPLUGIN_MODE=nohandshake", "FAKEPLUGIN_PIDFILE=" + pidFile}, "run", "--plugin-dir", dir, "--driver", "slow", "--", "true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	plugin := pluginOf(t, cmd.Process.Pid)
	cmd.Process.Signal(os.Interrupt)
	code, took := waitExit(t, cmd, 3*time.Second)
	if code != 130 {
		t.Fatalf("exit %d after Ctrl-C during a start, want 130", code)
	}
	t.Logf("Ctrl-C during a start: exit 130 after %s", took.Round(time.Millisecond))
	if alive(plugin) {
		t.Fatalf("plugin %d alive after the CLI exited", plugin)
	}
}

// TestSecondInterruptKills: a plugin stopped with SIGSTOP holds up the
// clean-up after the first Ctrl-C; the second ends the CLI at once and
// kills the plugin.
func TestSecondInterruptKills(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--", "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	plugin := pluginOf(t, cmd.Process.Pid)
	time.Sleep(200 * time.Millisecond) // the task runs
	syscall.Kill(plugin, syscall.SIGSTOP)
	defer syscall.Kill(plugin, syscall.SIGKILL)
	for stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", plugin)); !strings.Contains(string(stat), ") T "); stat, _ = os.ReadFile(fmt.Sprintf("/proc/%d/stat", plugin)) {
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	time.Sleep(300 * time.Millisecond)
	if cmd.ProcessState != nil {
		t.Fatal("the CLI exited while its plugin was stopped: this test cannot show the second Ctrl-C")
	}
	cmd.Process.Signal(os.Interrupt)
	code, took := waitExit(t, cmd, 2*time.Second)
	if code != 130 {
		t.Fatalf("exit %d after a second Ctrl-C, want 130", code)
	}
	t.Logf("second Ctrl-C to exit: %s", took.Round(time.Millisecond))
	deadline := time.Now().Add(2 * time.Second)
	for alive(plugin) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(plugin) {
		t.Fatalf("plugin %d alive after the second Ctrl-C", plugin)
	}
}

// TestBrokenStdoutCleansUp: orchestra run -- yes | head -1. The reader goes
// away; orchestra cleans up the task and exits 141, as SIGPIPE would.
func TestBrokenStdoutCleansUp(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--", "yes")
	root := ""
	for _, e := range cmd.Env {
		if v, ok := strings.CutPrefix(e, "POCKETCI_NATIVE_ROOT="); ok {
			root = v
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "y\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	stdout.Close()
	code, took := waitExit(t, cmd, 20*time.Second)
	if code != 141 {
		t.Fatalf("exit %d, want 141", code)
	}
	t.Logf("closed stdout to exit: %s", took.Round(time.Millisecond))
	entries, _ := os.ReadDir(root)
	if len(entries) > 0 {
		t.Fatalf("left in the native root: %v", entries)
	}
}

// TestPluginsTimeout: `orchestra plugins --timeout` bounds a plugin that
// never completes its handshake, and its strings are escaped.
func TestPluginsTimeout(t *testing.T) {
	dir := pluginDir(t, "slow", bins.fake)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := cli(t, []string{"FAKEPLUGIN_MODE=nohandshake", "FAKEPLUGIN_PIDFILE=" + pidFile}, "plugins", "--plugin-dir", dir, "--timeout", "1s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_, took := waitExit(t, cmd, 5*time.Second)
	if !strings.Contains(stdout.String(), "error") || !strings.Contains(stdout.String(), "deadline exceeded") {
		t.Fatalf("output:\n%s\nwant an error row saying it timed out", stdout.String())
	}
	t.Logf("plugins --timeout 1s with a plugin that never starts: %s", took.Round(time.Millisecond))
}

func TestPluginsEscapesPluginStrings(t *testing.T) {
	dir := pluginDir(t, "sly", bins.fake)
	env := []string{"FAKEPLUGIN_MODE=escapes"}
	out, err := cli(t, env, "plugins", "--plugin-dir", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsRune(out, 0x1b) || strings.Contains(string(out), "\nforged") {
		t.Fatalf("control characters reached the table:\n%q", out)
	}
	if !strings.Contains(string(out), `1.0\x1b[31m\nforged`) {
		t.Fatalf("the version is not shown escaped:\n%s", out)
	}
	out, err = cli(t, env, "plugins", "--plugin-dir", dir, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rows []pluginRow
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatal(err)
	}
	var sly *pluginRow
	for i := range rows {
		if rows[i].Name == "sly" {
			sly = &rows[i]
		}
	}
	if sly == nil || !strings.HasPrefix(sly.Version, "1.0\x1b[31m\nforged") {
		t.Fatalf("--json rows %+v: want the raw version", rows)
	}
}

// TestPluginsShowsWhatTheDriverImplements: each optional interface is
// reported, true or false, and the table lists those implemented (the
// native driver implements neither: "-").
func TestPluginsShowsWhatTheDriverImplements(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	out, err := cli(t, nil, "plugins", "--plugin-dir", dir, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rows []pluginRow
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Name != "native" || rows[0].Error != "" {
		t.Fatalf("rows %+v: want native, without an error", rows)
	}
	for _, name := range []string{"VolumeDataAccessor", "SandboxDriver"} {
		if !rows[0].Implements[name] {
			t.Fatalf("implements %v: want %s reported as implemented (native has it)", rows[0].Implements, name)
		}
	}
	out, err = cli(t, nil, "plugins", "--plugin-dir", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "IMPLEMENTS") {
		t.Fatalf("table:\n%s\nwant a header with IMPLEMENTS and one row", out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if i := slices.Index(header, "IMPLEMENTS"); len(row) != len(header) || row[i] != "SandboxDriver,VolumeDataAccessor" {
		t.Fatalf("table:\n%s\nwant native's IMPLEMENTS column to list SandboxDriver,VolumeDataAccessor", out)
	}
}

// TestRunTaskFlags: --workdir/-w is where the command starts (relative:
// below the default working directory, inside a volume mounted there),
// -v takes an optional size in GB, --cpu-kind is passed as a hint, and a
// malformed -v is refused naming it.
func TestRunTaskFlags(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string // contained
	}{
		{"workdir in a volume", []string{"-v", "repo:repo:1", "-w", "repo", "--", "sh", "-c", "basename $PWD"}, 0, "repo\n", ""},
		{"short and absolute", []string{"-w", "/tmp", "--", "sh", "-c", "basename $PWD"}, 0, "tmp\n", ""}, // native maps absolute paths below its task directory
		{"cpu kind hint", []string{"--cpu-kind", "arm", "--", "echo", "ok"}, 0, "ok\n", ""},
		{"bad size", []string{"-v", "repo:repo:lots", "--", "true"}, 125, "", `-v "repo:repo:lots"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := cli(t, nil, append([]string{"run", "--plugin-dir", dir, "--driver", "native"}, tt.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if code := exitCode(cmd.Run()); code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, and a stderr with %q", code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// configMarker stands for a secret in a driver config.
const configMarker = "s3cr3t-marker-XYZ"

// TestDriverConfig: --driver-config (JSON or a file) reaches the driver:
// native runs the task under the config's root. A config with an unknown
// field is refused naming the field. No string of a config (an unknown
// field's value, a root whose path holds it) appears in any output of
// run, conformance or plugins, at any log level.
func TestDriverConfig(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	root := filepath.Join(t.TempDir(), configMarker+"-root")
	good := fmt.Sprintf(`{"root":%q}`, root)
	unknown := fmt.Sprintf(`{"root":%q,"token":%q}`, t.TempDir(), configMarker)
	unknownFile := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(unknownFile, []byte(unknown), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // exact, when set
		want   string // in the output
	}{
		{"config applied", []string{"run", "--driver", "native", "--driver-config", good, "--", "sh", "-c", `case "$PWD" in "$0"/*) echo under-root;; esac`, root},
			0, "under-root\n", ""},
		{"config from a file refused", []string{"run", "--driver", "native", "--driver-config", unknownFile, "--", "true"}, 125, "", `"token"`},
		{"unknown field refused", []string{"run", "--driver", "native", "--driver-config", unknown, "--", "true"}, 125, "", `"token"`},
		{"conformance refuses it", []string{"conformance", "--driver", "native", "--driver-config", unknown, "--run", "^happy path$"}, 1, "", `"token"`},
		{"plugins", []string{"plugins", "--json"}, 0, "", ""},
	}
	for _, tt := range tests {
		for _, level := range []string{"off", "debug"} {
			t.Run(tt.name+"/"+level, func(t *testing.T) {
				args := append([]string{tt.args[0], "--plugin-dir", dir, "--log-level", level}, tt.args[1:]...)
				cmd := cli(t, nil, args...)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				code := exitCode(cmd.Run())
				if code != tt.code {
					t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
				}
				if tt.stdout != "" && stdout.String() != tt.stdout {
					t.Fatalf("stdout %q, want %q\nstderr: %s", stdout.String(), tt.stdout, stderr.String())
				}
				if !strings.Contains(stdout.String()+stderr.String(), tt.want) {
					t.Fatalf("stdout:\n%s\nstderr:\n%s\nwant it to say %s", stdout.String(), stderr.String(), tt.want)
				}
				for name, out := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
					if strings.Contains(out, configMarker) {
						t.Fatalf("a config string is in the %s:\n%s", name, out)
					}
				}
			})
		}
	}
}

// TestConformanceTimeout: a plugin whose Close never returns cannot hold
// up `orchestra conformance --timeout`, nor its deferred Close.
func TestConformanceTimeout(t *testing.T) {
	dir := pluginDir(t, "stuck", bins.fake)
	cmd := cli(t, []string{"FAKEPLUGIN_MODE=hang"}, "conformance", "--plugin-dir", dir, "--driver", "stuck", "--timeout", "1s", "--run", "^happy path$")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code, took := waitExit(t, cmd, 15*time.Second)
	if code != 1 || !strings.Contains(stdout.String(), "did not return within 1s") {
		t.Fatalf("exit %d, output:\n%s\nwant the case failed by its Close timing out", code, stdout.String())
	}
	t.Logf("conformance --timeout 1s with a plugin that never closes: %s", took.Round(time.Millisecond))
}

// dockerPlugin builds the docker plugin, or skips (fails under
// ORCHESTRA_REQUIRE_DOCKER=1) when there is no Docker Engine.
func dockerPlugin(t *testing.T) string {
	t.Helper()
	if err := exec.Command("docker", "info").Run(); err != nil {
		if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" {
			t.Fatalf("ORCHESTRA_REQUIRE_DOCKER=1 but docker info: %v", err)
		}
		t.Skipf("no Docker Engine (%v); set ORCHESTRA_REQUIRE_DOCKER=1 to fail instead", err)
	}
	return buildPlugin(t, "docker")
}

// qemuPlugin builds the qemu plugin, or skips (fails under
// ORCHESTRA_REQUIRE_QEMU=1) when QEMU is not installed.
func qemuPlugin(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("ORCHESTRA_REQUIRE_QEMU") == "1" {
			t.Fatalf("ORCHESTRA_REQUIRE_QEMU=1 but %v", err)
		}
		t.Skipf("qemu-system-x86_64 not installed; set ORCHESTRA_REQUIRE_QEMU=1 to fail instead")
	}
	return buildPlugin(t, "qemu")
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// buildPlugin builds plugins/<name>, its own module, once.
func buildPlugin(t *testing.T, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if out, ok := built[name]; ok {
		return out
	}
	out := filepath.Join(filepath.Dir(bins.orchestra), name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/pocketci-driver-"+name)
	cmd.Dir = "../../plugins/" + name
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the %s plugin: %v\n%s", name, err, b)
	}
	built[name] = out
	return out
}

// containers lists the docker containers of namespaces starting with prefix.
func containers(t *testing.T, namespace string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=pocketci.namespace="+namespace).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// TestPlatformStderrCarriesOnlyTheTask: the same as for native, through
// docker and qemu (whose plugin warns on a host without KVM).
func TestPlatformStderrCarriesOnlyTheTask(t *testing.T) {
	for _, tt := range []struct {
		name  string
		build func(*testing.T) string
	}{{"docker", dockerPlugin}, {"qemu", qemuPlugin}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, tt.name, tt.build(t))
			var env []string
			if home, err := os.UserHomeDir(); err == nil && os.Getenv("POCKETCI_QEMU_IMAGE_DIR") == "" {
				// cli gives orchestra a HOME of its own; the guest image is
				// in the real one's cache.
				env = append(env, "POCKETCI_QEMU_IMAGE_DIR="+filepath.Join(home, ".cache", "pocketci", "qemu"))
			}
			cmd := cli(t, env, "run", "--plugin-dir", dir, "--driver", tt.name, "--", "sh", "-c", "echo o; echo e >&2")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}
			if stdout.String() != "o\n" || stderr.String() != "e\n" {
				t.Fatalf("stdout %q, stderr %q; want exactly o and e", stdout.String(), stderr.String())
			}
		})
	}
}

// TestPluginDeathMidRun kills the plugin while its task runs: the CLI
// reports it in one line, and cleans the task up through the restarted
// plugin, which finds it again by ID.
func TestPluginDeathMidRun(t *testing.T) {
	dir := pluginDir(t, "docker", dockerPlugin(t))
	namespace := fmt.Sprintf("plugindeath-%d", time.Now().UnixNano())
	t.Cleanup(func() { cli(t, nil, "clean", "--plugin-dir", dir, "--driver", "docker", namespace).Run() })
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--driver", "docker", "--namespace", namespace, "--id", "victim", "--", "sh", "-c", "echo started; exec sleep 1000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	plugin := pluginOf(t, cmd.Process.Pid)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	syscall.Kill(plugin, syscall.SIGKILL)
	code, took := waitExit(t, cmd, 30*time.Second)
	if code != 125 || strings.Count(stderr.String(), "\n") != 1 || !strings.HasPrefix(stderr.String(), "orchestra: ") {
		t.Fatalf("exit %d, stderr %q; want 125 and one line", code, stderr.String())
	}
	t.Logf("plugin SIGKILL to CLI exit, task cleaned up: %s", took.Round(time.Millisecond))
	if left := containers(t, namespace); len(left) > 0 {
		t.Fatalf("containers left after the plugin died mid-run: %v\nstderr: %s", left, stderr.String())
	}
}

// TestNativePluginDeathMidRun: the same through native, where the task is a
// process tree that must not be orphaned.
func TestNativePluginDeathMidRun(t *testing.T) {
	dir := pluginDir(t, "native", bins.native)
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--id", "victim", "--", "sh", "-c", "echo started; exec sleep 1000")
	root := envOf(cmd, "POCKETCI_NATIVE_ROOT")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	plugin := pluginOf(t, cmd.Process.Pid)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	syscall.Kill(plugin, syscall.SIGKILL)
	code, _ := waitExit(t, cmd, 30*time.Second)
	if code != 125 {
		t.Fatalf("exit %d, stderr %q; want 125", code, stderr.String())
	}
	if left := processesBelow(root); len(left) > 0 {
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("processes of the task left after the plugin died mid-run: %v\nstderr: %s", left, stderr.String())
	}
}

func envOf(cmd *exec.Cmd, key string) string {
	v := ""
	for _, e := range cmd.Env {
		if s, ok := strings.CutPrefix(e, key+"="); ok {
			v = s
		}
	}
	return v
}

// processesBelow lists the processes whose working directory is below dir.
func processesBelow(dir string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, p := range procs {
		cwd, err := os.Readlink(p)
		if err == nil && strings.HasPrefix(cwd, dir+"/") {
			var pid int
			fmt.Sscanf(p, "/proc/%d/cwd", &pid)
			out = append(out, pid)
		}
	}
	return out
}

// TestKilledCLILeavesNoContainer: orchestra is killed with SIGKILL while a
// docker task runs in its throwaway namespace. The docker plugin keeps
// containers on host exit (for hosts that reattach), but this namespace was
// to die with orchestra: the plugin's reaper cleans it up.
func TestKilledCLILeavesNoContainer(t *testing.T) {
	dir := pluginDir(t, "docker", dockerPlugin(t))
	id := fmt.Sprintf("killed-%d", time.Now().UnixNano())
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--driver", "docker", "--id", id, "--", "sh", "-c", "echo started; exec sleep 1000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		cmd.Process.Kill()
		t.Fatalf("first line %q, %v", line, err)
	}
	byID := func() []string {
		out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=pocketci.task-id="+id).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))
	}
	if len(byID()) != 1 {
		t.Fatalf("want the task's container, docker ps says %v", byID())
	}
	t.Cleanup(func() {
		for _, c := range byID() {
			exec.Command("docker", "rm", "-f", c).Run()
		}
	})
	cmd.Process.Kill()
	cmd.Wait()
	start := time.Now()
	for len(byID()) > 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("container of a killed orchestra's throwaway namespace still there %s later", time.Since(start).Round(time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("container removed %s after SIGKILL of orchestra", time.Since(start).Round(100*time.Millisecond))
}

// TestSecondInterruptDocker: the second Ctrl-C ends orchestra at once even
// while the docker plugin is stopped; the container of its throwaway
// namespace is removed by the plugin's reaper after orchestra exited.
func TestSecondInterruptDocker(t *testing.T) {
	dir := pluginDir(t, "docker", dockerPlugin(t))
	id := fmt.Sprintf("twice-%d", time.Now().UnixNano())
	cmd := cli(t, nil, "run", "--plugin-dir", dir, "--driver", "docker", "--id", id, "--", "sh", "-c", "echo started; exec sleep 1000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	plugin := pluginOf(t, cmd.Process.Pid)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "started\n" {
		cmd.Process.Kill()
		t.Fatalf("first line %q, %v", line, err)
	}
	byID := func() []string {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=pocketci.task-id="+id).Output()
		return strings.Fields(string(out))
	}
	t.Cleanup(func() {
		for _, c := range byID() {
			exec.Command("docker", "rm", "-f", c).Run()
		}
	})
	syscall.Kill(plugin, syscall.SIGSTOP)
	defer syscall.Kill(plugin, syscall.SIGKILL)
	cmd.Process.Signal(os.Interrupt)
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	if code, took := waitExit(t, cmd, 2*time.Second); code != 130 {
		t.Fatalf("exit %d after a second Ctrl-C, want 130", code)
	} else {
		t.Logf("second Ctrl-C to exit: %s", took.Round(time.Millisecond))
	}
	start := time.Now()
	for len(byID()) > 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatal("the container outlived orchestra's second Ctrl-C by 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("container removed %s after orchestra exited", time.Since(start).Round(100*time.Millisecond))
}
