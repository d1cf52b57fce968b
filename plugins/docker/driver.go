// Package docker is the orchestra driver that runs tasks as Docker
// containers through the Engine API. See README.md for the mapping of a task
// onto a container, naming, labels and the image policy.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/jtarchie/pocketci/orchestra"
)

// logConfig is the log driver every container gets, whatever the daemon's
// default: "local" keeps output byte for byte (json-file turns invalid UTF-8
// into U+FFFD) and is compact; the sizes keep logs from the start up to
// about 4 GiB per container (json-file with a daemon-wide max-size of a few
// MiB lost the start of an 8 MiB output).
var logConfig = container.LogConfig{
	Type:   "local",
	Config: map[string]string{"max-size": "1g", "max-file": "4"},
}

// closeTimeout bounds the engine calls Close makes, since Close takes no
// context.
const closeTimeout = 2 * time.Minute

// driverName is the name the driver is registered and served under.
const driverName = "docker"

// Provider builds docker drivers from a Config: one per namespace, each
// with its own Engine client, so instances with different configs work
// side by side in one process.
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider[Config](driverName, func(_ context.Context, namespace string, cfg Config, logger *slog.Logger) (orchestra.Driver, error) {
		d, err := New(namespace, cfg, logger)
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// Driver runs orchestra tasks as Docker containers in one namespace. It
// implements orchestra.Driver.
type Driver struct {
	namespace string
	logger    *slog.Logger
	client    *client.Client

	// lifecycle is held for reading by every operation that creates
	// something in the engine, and for writing by Close, so that nothing is
	// created after Close listed the namespace.
	lifecycle sync.RWMutex
	closing   bool // Close was called: new work is refused
	closed    bool // a Close removed everything: later calls return nil

	// connectMu guards connected and splitLinesLoseNewline: the API
	// version is negotiated once, before any concurrent use of the client
	// (the client's lazy negotiation races with requests in flight).
	connectMu sync.Mutex
	connected bool
	// splitLinesLoseNewline: the engine's local log driver drops the
	// newline of a line it split (engines before API 1.42), see logs.go.
	splitLinesLoseNewline bool

	taskLocks taskLocks // serialises RunContainer per task ID

	mu         sync.Mutex
	containers map[string]*Container // by task ID, until Cleanup
	volumes    map[string]*Volume    // by volume name, until its Cleanup
}

var _ orchestra.Driver = (*Driver)(nil)

// New returns a driver for namespace that talks to the Engine cfg names
// (its empty fields from the DOCKER_* environment). It does not contact the
// engine: the first operation that needs it does, and negotiates the API
// version then.
func New(namespace string, cfg Config, logger *slog.Logger) (*Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("docker: new driver: %w", err)
	}
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("docker: new driver for namespace %q: %w: %w", namespace, orchestra.ErrInvalidConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cli, err := newClient(s)
	if err != nil {
		return nil, fmt.Errorf("docker: new driver for namespace %q: %w", namespace, err)
	}
	return &Driver{
		namespace:  namespace,
		logger:     logger.With("driver", driverName, "namespace", namespace),
		client:     cli,
		containers: map[string]*Container{},
		volumes:    map[string]*Volume{},
	}, nil
}

// connect negotiates the API version with the engine on first use. A failed
// attempt is not remembered: the next call tries again.
func (d *Driver) connect(ctx context.Context) error {
	d.connectMu.Lock()
	defer d.connectMu.Unlock()
	if d.connected {
		return nil
	}
	ping, err := d.client.Ping(ctx)
	if err != nil {
		return fmt.Errorf("docker engine at %s does not answer: %w", d.client.DaemonHost(), err)
	}
	d.client.NegotiateAPIVersionPing(ping)
	d.splitLinesLoseNewline = loseSplitNewline(ping.APIVersion)
	d.connected = true
	d.logger.Debug("connected to the engine", "host", d.client.DaemonHost(), "api_version", d.client.ClientVersion(),
		"engine_api_version", ping.APIVersion, "repair_split_lines", d.splitLinesLoseNewline)
	return nil
}

// repairSplitLines reports whether Logs must put back the newlines the
// engine drops from split lines; known once connected.
func (d *Driver) repairSplitLines() bool {
	d.connectMu.Lock()
	defer d.connectMu.Unlock()
	return d.splitLinesLoseNewline
}

// Name returns "docker".
func (d *Driver) Name() string { return driverName }

// namespaceFilter selects everything labelled with the driver's namespace.
func namespaceFilter(namespace string) filters.Args {
	return filters.NewArgs(filters.Arg("label", LabelNamespace+"="+namespace))
}

// RunContainer creates and starts a container for task and returns without
// waiting for it to finish. When a container for task.ID already exists in
// the namespace (started by this or another driver instance), it is returned
// and the command does not run again.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, fmt.Errorf("docker: run container: %w", err)
	}
	if task.Image == "" {
		return nil, fmt.Errorf("docker: run task %q: %w: Image is empty", task.ID, orchestra.ErrInvalidTask)
	}

	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, orchestra.ErrClosed)
	}

	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}
	defer d.taskLocks.lock(task.ID)()

	if c, err := d.findTask(ctx, task.ID); err == nil {
		d.logger.Debug("task already has a container", "task", task.ID, "container", c.name)
		return c, nil
	} else if !errors.Is(err, orchestra.ErrContainerNotFound) {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}

	ref, err := d.ensureImage(ctx, task.Image)
	if err != nil {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}

	mounts, err := d.taskMounts(ctx, task)
	if err != nil {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}
	if k := task.ContainerLimits.CPUKind; k != "" {
		d.logger.Debug("CPUKind is a hint: the engine has no CPU classes", "task", task.ID, "cpu_kind", k)
	}

	name := containerName(d.namespace, task.ID)
	cfg, hostCfg := d.containerConfig(task, ref, mounts)
	created, err := d.client.ContainerCreate(ctx, cfg, hostCfg, nil, nil, name)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			// Another driver instance created it between our lookup and
			// our create: use theirs.
			if c, ferr := d.findTask(ctx, task.ID); ferr == nil {
				return c, nil
			}
		}
		return nil, fmt.Errorf("docker: create container %q for task %q: %w", name, task.ID, err)
	}
	for _, w := range created.Warnings {
		d.logger.Warn("engine warning on create", "task", task.ID, "container", name, "warning", w)
	}
	c := &Container{driver: d, id: created.ID, name: name, taskID: task.ID}
	if err := d.start(ctx, c, task.Stdin); err != nil {
		return nil, err
	}
	c.remember()
	return c, nil
}

// containerConfig maps task onto the engine's container and host configs
// (see README.md for the table).
func (d *Driver) containerConfig(task orchestra.Task, ref string, mounts []mount.Mount) (*container.Config, *container.HostConfig) {
	cfg := &container.Config{
		Image:      ref,
		Cmd:        task.Command,
		Env:        envList(task.Env),
		User:       task.User,
		WorkingDir: orchestra.WorkingDir(workDir, task),
		Labels: map[string]string{
			LabelNamespace: d.namespace,
			LabelTaskID:    task.ID,
		},
	}
	if task.Stdin != nil {
		cfg.OpenStdin = true
		cfg.StdinOnce = true
		cfg.AttachStdin = true
	}
	runInit := true
	hostCfg := &container.HostConfig{
		// The engine's init (docker-init) is PID 1 and the command its
		// child, as on a native host: a command that kills itself with
		// SIGKILL exits 137, signals reach it, zombies are reaped.
		Init:       &runInit,
		LogConfig:  logConfig,
		Privileged: task.Privileged,
		Mounts:     mounts,
		Resources: container.Resources{
			CPUShares: task.ContainerLimits.CPU,
			Memory:    task.ContainerLimits.Memory,
		},
	}
	if task.ContainerLimits.Memory > 0 {
		// No swap on top of the limit: the limit is what the task gets.
		hostCfg.MemorySwap = task.ContainerLimits.Memory
	}
	return cfg, hostCfg
}

// start attaches stdin (when there is one) and starts the created
// container c. A command that cannot be executed is a finished task, not
// an error; any other failure removes the container.
func (d *Driver) start(ctx context.Context, c *Container, stdin io.Reader) error {
	if stdin != nil {
		hijack, err := d.client.ContainerAttach(ctx, c.id, container.AttachOptions{Stream: true, Stdin: true})
		if err != nil {
			d.removeQuietly(c.id, c.name)
			return fmt.Errorf("docker: attach stdin of container %q for task %q: %w", c.name, c.taskID, err)
		}
		c.stdin = &hijack
	}
	if err := d.client.ContainerStart(ctx, c.id, container.StartOptions{}); err != nil {
		c.closeStdin()
		// A command that cannot be executed leaves the container "created"
		// with an exit code (127 not found, 126 not executable) and the
		// runtime's message: report it as a finished task, like `docker run`.
		info, ierr := d.client.ContainerInspect(context.WithoutCancel(ctx), c.id)
		if ierr == nil && info.State != nil && info.State.Status == container.StateCreated &&
			info.State.ExitCode != 0 && info.State.Error != "" {
			d.logger.Warn("task could not start", "task", c.taskID, "container", c.name, "exit_code", info.State.ExitCode, "error", info.State.Error)
			return nil
		}
		d.removeQuietly(c.id, c.name)
		return fmt.Errorf("docker: start container %q for task %q: %w", c.name, c.taskID, err)
	}
	if c.stdin != nil {
		go c.copyStdin(stdin)
	}
	d.logger.Debug("container started", "task", c.taskID, "container", c.name, "id", c.id)
	return nil
}

// taskMounts creates (or reuses) the volume of each mount and places it:
// a relative path below the default working directory, whatever WorkDir
// says. SizeGB is a hint: the local volume driver has no size.
func (d *Driver) taskMounts(ctx context.Context, task orchestra.Task) ([]mount.Mount, error) {
	var mounts []mount.Mount
	for i, m := range task.Mounts {
		v, err := d.createVolume(ctx, m.Name)
		if err != nil {
			return nil, fmt.Errorf("Mounts[%d] %q: %w", i, m.Name, err)
		}
		if m.SizeGB > 0 {
			d.logger.Debug("volume size is a hint: the local volume driver has no size", "task", task.ID, "volume", m.Name, "size_gb", m.SizeGB)
		}
		target := orchestra.MountPath(workDir, m.Path)
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: v.dockerName, Target: target})
	}
	return mounts, nil
}

// removeQuietly force-removes a container that failed to start, logging
// failures.
func (d *Driver) removeQuietly(id, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		d.logger.Warn("could not remove container that failed to start", "container", name, "err", err)
	}
}

// envList turns task.Env into the sorted KEY=VALUE list Docker wants.
func envList(env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}

// GetContainer returns the container whose Container.ID is containerID
// (the engine's container ID), asking the engine, so it works from any
// driver instance of the namespace and after a restart. An
// ID that is not a full engine container ID, that the engine does not
// know, or whose container belongs to another namespace gives an error
// wrapping orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(ctx context.Context, containerID string) (orchestra.Container, error) {
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return nil, fmt.Errorf("docker: get container %q: %w", containerID, orchestra.ErrClosed)
	}
	if !isContainerID(containerID) {
		return nil, fmt.Errorf("docker: get container %q: not an engine container ID: %w", containerID, orchestra.ErrContainerNotFound)
	}
	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("docker: get container %q: %w", containerID, err)
	}
	info, err := d.client.ContainerInspect(ctx, containerID)
	if cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("docker: get container %q in namespace %q: %w", containerID, d.namespace, orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("docker: get container %q: %w", containerID, err)
	}
	var labels map[string]string
	if info.Config != nil {
		labels = info.Config.Labels
	}
	taskID, ok := labels[LabelTaskID]
	if info.ID != containerID || labels[LabelNamespace] != d.namespace || !ok {
		// Another namespace's container (or none of ours): not found,
		// without saying whose it is.
		return nil, fmt.Errorf("docker: get container %q in namespace %q: %w", containerID, d.namespace, orchestra.ErrContainerNotFound)
	}
	if c := d.remembered(containerID); c != nil {
		// This instance's own handle knows more (a failed stdin reader).
		return c, nil
	}
	c := &Container{driver: d, id: info.ID, name: strings.TrimPrefix(info.Name, "/"), taskID: taskID}
	c.remember()
	return c, nil
}

// isContainerID reports whether id is a full engine container ID (64
// lower-case hex digits): names and ID prefixes, which the engine would
// also accept, are not IDs the driver gave out.
func isContainerID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// remembered returns this instance's handle on the container with engine
// ID id, if it has one.
func (d *Driver) remembered(id string) *Container {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.containers {
		if c.id == id && !c.isRemoved() {
			return c
		}
	}
	return nil
}

// findTask looks taskID up in memory, then in the engine by the namespace
// and task-id labels (checked exactly).
func (d *Driver) findTask(ctx context.Context, taskID string) (*Container, error) {
	d.mu.Lock()
	c, ok := d.containers[taskID]
	d.mu.Unlock()
	if ok && !c.isRemoved() {
		return c, nil
	}
	args := namespaceFilter(d.namespace)
	args.Add("label", LabelTaskID+"="+taskID)
	list, err := d.client.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list containers of task %q: %w", taskID, err)
	}
	for _, s := range list {
		if s.Labels[LabelNamespace] != d.namespace || s.Labels[LabelTaskID] != taskID {
			continue
		}
		name := containerName(d.namespace, taskID)
		c := &Container{driver: d, id: s.ID, name: name, taskID: taskID}
		c.remember()
		return c, nil
	}
	return nil, fmt.Errorf("task %q in namespace %q: %w", taskID, d.namespace, orchestra.ErrContainerNotFound)
}

// normalizeImage turns a reference such as "busybox" into its canonical
// tagged form "docker.io/library/busybox:latest" and the familiar form
// "busybox:latest" used in messages.
func normalizeImage(img string) (canonical, familiar string, err error) {
	named, err := reference.ParseNormalizedNamed(img)
	if err != nil {
		return "", "", fmt.Errorf("%w: image reference %q: %w", orchestra.ErrInvalidTask, img, err)
	}
	named = reference.TagNameOnly(named)
	return named.String(), reference.FamiliarString(named), nil
}

// ensureImage makes sure img is present in the engine: a local image is
// used as is; an absent one is pulled, with progress in the log. It returns
// the reference to create the container with.
func (d *Driver) ensureImage(ctx context.Context, img string) (string, error) {
	canonical, familiar, err := normalizeImage(img)
	if err != nil {
		return "", err
	}
	if _, err := d.client.ImageInspect(ctx, canonical); err == nil {
		return familiar, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect image %q: %w", familiar, err)
	}
	d.logger.Info("image not present locally, pulling", "image", familiar)
	if err := d.pull(ctx, canonical, familiar); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("pull image %q: %w", familiar, err)
		}
		return "", fmt.Errorf("image %q is not present locally and could not be pulled: %w: %w", familiar, orchestra.ErrImageNotFound, err)
	}
	if _, err := d.client.ImageInspect(ctx, canonical); err != nil {
		return "", fmt.Errorf("image %q was pulled but cannot be inspected: %w: %w", familiar, orchestra.ErrImageNotFound, err)
	}
	d.logger.Info("image pulled", "image", familiar)
	return familiar, nil
}

// pull pulls canonical, logging progress, and returns the first error the
// engine reports, whether in the response or in the progress stream.
func (d *Driver) pull(ctx context.Context, canonical, familiar string) error {
	rc, err := d.client.ImagePull(ctx, canonical, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg jsonmessage.JSONMessage
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading pull progress: %w", err)
		}
		if msg.Error != nil {
			return msg.Error
		}
		if msg.Progress != nil {
			d.logger.Debug("pull progress", "image", familiar, "layer", msg.ID, "status", msg.Status,
				"current", msg.Progress.Current, "total", msg.Progress.Total)
			continue
		}
		d.logger.Info("pull", "image", familiar, "layer", msg.ID, "status", msg.Status)
	}
}

// CreateVolume creates, or returns the existing, Docker volume
// "{namespace}-{name}" (sanitized) labelled with the namespace. size is a
// hint: the local volume driver has no size limit.
func (d *Driver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("docker: create volume: %w", err)
	}
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return nil, fmt.Errorf("docker: create volume %q: %w", name, orchestra.ErrClosed)
	}
	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("docker: create volume %q: %w", name, err)
	}
	if size != 0 {
		d.logger.Debug("volume size is a hint: the local volume driver has no size", "volume", name, "size", size)
	}
	v, err := d.createVolume(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	return v, nil
}

// createVolume does CreateVolume's work; the caller holds lifecycle.
func (d *Driver) createVolume(ctx context.Context, name string) (*Volume, error) {
	vname := volumeName(d.namespace, name)
	created, err := d.client.VolumeCreate(ctx, volume.CreateOptions{
		Name: vname,
		Labels: map[string]string{
			LabelNamespace: d.namespace,
			LabelVolume:    name,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create volume %q (%s): %w", name, vname, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.volumes[name]; ok {
		return v, nil
	}
	v := &Volume{driver: d, name: name, dockerName: vname, mountpoint: created.Mountpoint}
	d.volumes[name] = v
	return v, nil
}

// Close refuses new work (orchestra.ErrClosed), then force-removes every
// container labelled with the namespace (running ones too) and every such
// volume, as the engine reports them. It logs each failure, continues, and
// returns them joined. The driver counts as closed only once that
// succeeded: a Close that failed can be called again and removes what is
// left; calls after a successful Close return nil.
func (d *Driver) Close() error {
	d.lifecycle.Lock()
	defer d.lifecycle.Unlock()
	if d.closed {
		return nil
	}
	d.closing = true

	d.mu.Lock()
	for _, c := range d.containers {
		c.closeStdin()
	}
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var err error
	if cerr := d.connect(ctx); cerr != nil {
		err = fmt.Errorf("docker: close namespace %q: %w", d.namespace, cerr)
	} else {
		err = removeNamespace(ctx, d.client, d.namespace, d.logger)
	}
	if err != nil {
		// Keep the client: a retried Close needs it.
		d.logger.Warn("close failed; calling Close again retries", "err", err)
		return err
	}
	d.closed = true
	d.mu.Lock()
	clear(d.containers)
	clear(d.volumes)
	d.mu.Unlock()
	if cerr := d.client.Close(); cerr != nil {
		d.logger.Warn("closing the engine client", "err", cerr)
		return fmt.Errorf("docker: close client: %w", cerr)
	}
	d.logger.Debug("closed")
	return nil
}

// removeNamespace force-removes the namespace's containers, then its
// volumes, continuing past failures.
func removeNamespace(ctx context.Context, cli *client.Client, namespace string, logger *slog.Logger) error {
	var errs []error
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: namespaceFilter(namespace)})
	if err != nil {
		errs = append(errs, fmt.Errorf("docker: list containers of namespace %q: %w", namespace, err))
	}
	for _, s := range list {
		if s.Labels[LabelNamespace] != namespace {
			continue
		}
		err := cli.ContainerRemove(ctx, s.ID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
			logger.Warn("could not remove container", "id", s.ID, "names", s.Names, "err", err)
			errs = append(errs, fmt.Errorf("docker: remove container %s %v: %w", s.ID, s.Names, err))
		}
	}
	vols, err := cli.VolumeList(ctx, volume.ListOptions{Filters: namespaceFilter(namespace)})
	if err != nil {
		errs = append(errs, fmt.Errorf("docker: list volumes of namespace %q: %w", namespace, err))
	}
	for _, v := range vols.Volumes {
		if v == nil || v.Labels[LabelNamespace] != namespace {
			continue
		}
		if err := removeVolume(ctx, cli, v.Name); err != nil {
			logger.Warn("could not remove volume", "volume", v.Name, "err", err)
			errs = append(errs, fmt.Errorf("docker: remove volume %q: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// removeVolume removes a volume; an absent one is not an error. A volume
// still held by a container being removed is retried briefly.
func removeVolume(ctx context.Context, cli *client.Client, name string) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		err = cli.VolumeRemove(ctx, name, false)
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		if !cerrdefs.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// isRemovalInProgress reports the engine's answer to removing a container
// that is already being removed.
func isRemovalInProgress(err error) bool {
	return err != nil && strings.Contains(err.Error(), "already in progress")
}

// Leaks asks the engine that cfg names (not any driver's memory) for every
// container and volume labelled with namespace and describes each one. An
// empty result means nothing of the namespace is left.
func Leaks(ctx context.Context, cfg Config, namespace string) ([]string, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("docker: leaks: %w", err)
	}
	cli, err := newClient(s)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var left []string
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: namespaceFilter(namespace)})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers of namespace %q: %w", namespace, err)
	}
	for _, s := range list {
		if s.Labels[LabelNamespace] == namespace {
			left = append(left, fmt.Sprintf("container %s %v (%s)", s.ID[:12], s.Names, s.State))
		}
	}
	vols, err := cli.VolumeList(ctx, volume.ListOptions{Filters: namespaceFilter(namespace)})
	if err != nil {
		return nil, fmt.Errorf("docker: list volumes of namespace %q: %w", namespace, err)
	}
	for _, v := range vols.Volumes {
		if v != nil && v.Labels[LabelNamespace] == namespace {
			left = append(left, "volume "+v.Name)
		}
	}
	return left, nil
}
