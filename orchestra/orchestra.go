// Package orchestra is the contract between pocketci and the drivers that run
// its containers. A driver implements Driver, Container, ContainerStatus and
// Volume, and registers an InitFunc under its name with Add. The same contract
// holds whether the driver is compiled into the host or runs as an external
// plugin (see package pluginsdk and package host).
package orchestra

import (
	"context"
	"io"
)

// Driver runs containers and manages volumes inside one namespace.
type Driver interface {
	// Close removes every container and volume tagged with the driver's
	// namespace. It is idempotent and continues past partial failures.
	Close() error
	// CreateVolume creates, or returns the existing, volume with this name.
	// A size of 0 means the platform default.
	CreateVolume(ctx context.Context, name string, size int) (Volume, error)
	// Name is the driver's registered name.
	Name() string
	// RunContainer starts task and returns without waiting for it to finish.
	// Running a task whose ID already ran in this namespace returns the
	// existing container and does not run the command again.
	RunContainer(ctx context.Context, task Task) (Container, error)
}

// Container is a handle on a task started by RunContainer.
type Container interface {
	// Cleanup removes the container. It is idempotent.
	Cleanup(ctx context.Context) error
	// Logs writes everything the task wrote, from the start, to stdout and
	// stderr. It gives the same bytes on every call, also after exit.
	Logs(ctx context.Context, stdout, stderr io.Writer) error
	// Status reports whether the task is done and its exit code. It may be
	// polled forever; once done, the result never changes.
	Status(ctx context.Context) (ContainerStatus, error)
}

// ContainerStatus is a snapshot of a container's state.
type ContainerStatus interface {
	// IsDone reports whether the task has finished.
	IsDone() bool
	// ExitCode is the task's exit code: 0 on success, non-zero on failure,
	// 128+N when the task was killed by signal N.
	ExitCode() int
}

// Volume is storage that outlives a container and can be mounted by tasks.
type Volume interface {
	// Cleanup removes the volume. It is idempotent.
	Cleanup(ctx context.Context) error
	// Name is the volume's name as given to CreateVolume.
	Name() string
}

// Task describes one command to run in a container.
type Task struct {
	Command         []string          // Command to execute in container
	ContainerLimits ContainerLimits   // CPU/Memory limits
	Env             map[string]string // Environment variables
	ID              string            // Unique task identifier
	Image           string            // Container image to use
	Mounts          Mounts            // Volume mounts
	Privileged      bool              // Run with elevated privileges
	Stdin           io.Reader         // Standard input stream (optional)
	User            string            // User to run as (optional)
}

// Mount places a volume at a path inside the container.
type Mount struct {
	Name string // Volume name
	Path string // Mount path in container
}

// Mounts is the list of volumes a task mounts.
type Mounts []Mount

// ContainerLimits bounds the resources of a container.
type ContainerLimits struct {
	CPU    int64 // CPU shares (0 means unlimited)
	Memory int64 // Memory in bytes (0 means unlimited)
}

// LogFollower is implemented by containers that can stream their output live.
// FollowLogs writes output from the start as it is produced and returns when
// the container has exited and all its output was written, or when ctx ends.
type LogFollower interface {
	FollowLogs(ctx context.Context, stdout, stderr io.Writer) error
}

// ContainerFinder is implemented by drivers that can find a container they
// started earlier (possibly from another driver instance in the same
// namespace) by its task ID. When there is none, GetContainer returns an error
// that satisfies errors.Is(err, ErrContainerNotFound).
type ContainerFinder interface {
	GetContainer(ctx context.Context, taskID string) (Container, error)
}
