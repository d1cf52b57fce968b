// Package orchestra is the contract between pocketci and the drivers that run
// its containers: the names, method sets and semantics of pocketci's own
// orchestra package. A driver implements Driver, Container, ContainerStatus
// and Volume, and a DriverProvider builds it from a namespace and a typed
// config. The same contract holds whether the driver is compiled into the
// host or runs as an external plugin (see package pluginsdk and package
// host).
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
	// GetContainer finds a container of the namespace by the ID its
	// Container.ID returned, also from another driver instance of the same
	// namespace or after a restart. When there is none, the error satisfies
	// errors.Is(err, ErrContainerNotFound).
	GetContainer(ctx context.Context, containerID string) (Container, error)
}

// Container is a handle on a task started by RunContainer.
type Container interface {
	// Cleanup removes the container. It is idempotent.
	Cleanup(ctx context.Context) error
	// Logs writes the task's output from the start to stdout and stderr.
	// Without follow it writes what there is now, the same bytes on every
	// call, also after exit. With follow it goes on writing as the task
	// writes, and returns once the task exited and all of its output was
	// written, or when ctx ends.
	Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error
	// Status reports whether the task is done and its exit code. It may be
	// polled forever; once done, the result never changes.
	Status(ctx context.Context) (ContainerStatus, error)
	// ID identifies the container for Driver.GetContainer.
	ID() string
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
	// Path is where the volume's files are: a directory on this machine for
	// a driver that keeps them here, else the platform's own location of the
	// volume (never a place the caller should write to on this machine).
	Path() string
}

// Task describes one command to run in a container.
type Task struct {
	Command         []string          // Command to execute in container
	ContainerLimits ContainerLimits   // CPU/Memory limits
	Env             map[string]string // Environment variables, exactly
	ID              string            // Unique task identifier
	Image           string            // Container image to use
	Mounts          Mounts            // Volume mounts
	Privileged      bool              // Run with elevated privileges
	Stdin           io.Reader         // Standard input stream (optional)
	User            string            // User to run as (optional)
	// WorkDir is the command's working directory: absolute, or relative to
	// the task's default working directory (where relative mounts are). See
	// WorkingDir.
	WorkDir string
}

// Mount places a volume at a path inside the container.
type Mount struct {
	Name string // Volume name
	Path string // Mount path: absolute, or relative to the default working directory
	// SizeGB is the size of the volume when the task creates it; 0 means
	// the platform default.
	SizeGB int
}

// Mounts is the list of volumes a task mounts.
type Mounts []Mount

// ContainerLimits bounds the resources of a container.
type ContainerLimits struct {
	CPU int64 // CPU shares (0 means unlimited)
	// CPUKind is a class of CPU ("shared", "performance"); empty is the
	// platform default. Where a platform has no such classes it is a hint.
	CPUKind string
	Memory  int64 // Memory in bytes (0 means unlimited)
}

// VolumeDataAccessor is implemented by drivers that move a volume's files in
// and out as tar streams, wherever the volume lives.
type VolumeDataAccessor interface {
	// CopyToVolume extracts the tar archive read from reader into the
	// volume's root.
	CopyToVolume(ctx context.Context, volumeName string, reader io.Reader) error
	// CopyFromVolume returns a tar archive of the whole volume.
	CopyFromVolume(ctx context.Context, volumeName string) (io.ReadCloser, error)
	// ReadFilesFromVolume returns a tar archive of the given files and
	// directories (recursively), relative to the volume's root.
	ReadFilesFromVolume(ctx context.Context, volumeName string, filePaths ...string) (io.ReadCloser, error)
}

// Sandbox is a long-lived container that runs many commands in turn.
type Sandbox interface {
	// Exec runs cmd in the sandbox with env and workDir for this call only,
	// streaming its input and output, and returns its final status.
	Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (ContainerStatus, error)
	// Cleanup stops and removes the sandbox. It is idempotent.
	Cleanup(ctx context.Context) error
	// ID identifies the sandbox.
	ID() string
}

// SandboxDriver is implemented by drivers that start sandboxes.
type SandboxDriver interface {
	// StartSandbox starts a long-lived container for task (its Command is
	// not run) in which Sandbox.Exec runs commands.
	StartSandbox(ctx context.Context, task Task) (Sandbox, error)
}
