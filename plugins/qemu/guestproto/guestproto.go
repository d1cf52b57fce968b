// Package guestproto is the protocol between the qemu driver and
// pocketci-guestd, the task daemon it starts in the guest: JSON lines over
// a virtio-serial port. The host sends Requests; the guest answers a hello
// and reports every task's end as an Event, so the host never polls.
// Both sides import this package and nothing else of each other; it uses
// only the standard library, so the guest binary stays small.
package guestproto

// Version changes whenever a message changes meaning. The host refuses a
// daemon that answers its hello with another version.
const Version = 3

// PortName is the virtio-serial port the daemon listens on.
const PortName = "org.pocketci.guestd.0"

// MaxLine bounds one message (a task's argv and env travel in it; the
// driver refuses larger tasks before they get here).
const MaxLine = 80 << 20

// Request ops.
const (
	// OpHello asks for a hello Event carrying the same Nonce: everything
	// the host reads before it is stale and skipped.
	OpHello = "hello"
	// OpStart starts a task; its end is an EvExit with the same ID.
	OpStart = "start"
	// OpKill kills the task with ID and everything it started (its
	// cgroup). Its EvExit follows as usual; an unknown ID is ignored.
	OpKill = "kill"
	// OpDrop unmounts and removes the sandbox root named Sandbox (its
	// commands were killed first). An unknown name is ignored.
	OpDrop = "drop"
)

// Event kinds.
const (
	EvHello = "hello"
	EvExit  = "exit"
)

// Request is one host-to-guest message.
type Request struct {
	Op    string `json:"op"`
	ID    uint64 `json:"id,omitempty"`
	Nonce string `json:"nonce,omitempty"`
	Start *Start `json:"start,omitempty"`
	// Sandbox names the sandbox root OpDrop removes.
	Sandbox string `json:"sandbox,omitempty"`
}

// Start describes one task.
type Start struct {
	// Dir is the task's directory on the share: it holds the files stdout
	// and stderr (created by the host), stdin.N chunks and stdin.end, and,
	// for a task in the guest's own userland, its working dir "work".
	Dir string `json:"dir"`
	// Slot names the task's cgroup (/sys/fs/cgroup/slot-<Slot>); the host
	// reuses a slot only after its task's EvExit.
	Slot int `json:"slot"`
	// User is "", "root", a name from the root's /etc/passwd, or uid[:gid].
	User string `json:"user,omitempty"`
	// Privileged keeps every capability (and a writable /sys in an
	// image); otherwise the task gets Docker's default capability set.
	Privileged bool `json:"privileged,omitempty"`
	// Stdin is true when the host feeds stdin chunks.
	Stdin bool `json:"stdin,omitempty"`
	// Root is an unpacked image to run in (over a per-task overlay), or
	// "" for the guest's own userland.
	Root string `json:"root,omitempty"`
	// WorkDir is the command's working directory, inside Root when there is
	// one; made when missing. Empty: Dir/work (without Root) or "/".
	WorkDir string `json:"workdir,omitempty"`
	// Sandbox, with Root, names a root kept between tasks (letters, digits,
	// '-'): the first task that names it mounts it (over Root, with Binds
	// and Privileged) and it stays until OpDrop; every task naming it runs
	// there, so files written by one are seen by the next.
	Sandbox string `json:"sandbox,omitempty"`
	// Binds are volumes bound for the task, in order (an outer path before
	// one inside it): inside Root, or, without Root, in a mount namespace
	// of the task's own.
	Binds []Bind `json:"binds,omitempty"`
	// Memory is memory.max in bytes (0: max); CPUWeight is cpu.weight
	// (0: the default 100).
	Memory    int64 `json:"memory,omitempty"`
	CPUWeight int64 `json:"cpu_weight,omitempty"`
	// Env is the task's whole environment (NAME=VALUE), Argv its command.
	Env  []string `json:"env"`
	Argv []string `json:"argv"`
}

// Bind is a directory of the guest bound at Dst inside the task's root.
type Bind struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// Event is one guest-to-host message.
type Event struct {
	Ev    string `json:"ev"`
	ID    uint64 `json:"id,omitempty"`
	Nonce string `json:"nonce,omitempty"`
	// Proto is the daemon's Version (hello only).
	Proto int `json:"proto,omitempty"`
	// Code is the task's exit code, 128+N for signal N (exit only).
	Code int `json:"code"`
	// Error says why the task did not start (exit only); the same text is
	// on the task's stderr.
	Error string `json:"error,omitempty"`
}
