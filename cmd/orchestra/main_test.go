package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	if len(rows) == 0 || rows[0].Name != "native" || !rows[0].Implements["ContainerFinder"] {
		t.Fatalf("rows %+v: want native implementing ContainerFinder", rows)
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
