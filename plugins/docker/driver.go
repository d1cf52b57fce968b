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

func init() {
	orchestra.Add("docker", New)
}

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

// Driver runs orchestra tasks as Docker containers in one namespace. It
// implements orchestra.Driver and orchestra.ContainerFinder; its containers
// implement orchestra.LogFollower.
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

	// connectMu guards connected: the API version is negotiated once,
	// before any concurrent use of the client (the client's lazy
	// negotiation races with requests in flight).
	connectMu sync.Mutex
	connected bool

	taskLocks taskLocks // serialises RunContainer per task ID

	mu         sync.Mutex
	containers map[string]*Container // by task ID, until Cleanup
	volumes    map[string]*Volume    // by volume name, until its Cleanup
}

var (
	_ orchestra.Driver          = (*Driver)(nil)
	_ orchestra.ContainerFinder = (*Driver)(nil)
)

// New connects to the Docker Engine named by the environment (DOCKER_HOST and
// friends, see client.FromEnv), negotiating the API version, and returns a
// driver for namespace. It does not contact the engine: the first operation
// that needs it does.
func New(namespace string, logger *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("docker: new driver: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cli, err := newClient()
	if err != nil {
		return nil, fmt.Errorf("docker: new driver for namespace %q: %w", namespace, err)
	}
	return &Driver{
		namespace:  namespace,
		logger:     logger.With("driver", "docker", "namespace", namespace),
		client:     cli,
		containers: map[string]*Container{},
		volumes:    map[string]*Volume{},
	}, nil
}

func newClient() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
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
	d.connected = true
	d.logger.Debug("connected to the engine", "host", d.client.DaemonHost(), "api_version", d.client.ClientVersion())
	return nil
}

// Name returns "docker".
func (d *Driver) Name() string { return "docker" }

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

	if c, err := d.findContainer(ctx, task.ID); err == nil {
		d.logger.Debug("task already has a container", "task", task.ID, "container", c.name)
		return c, nil
	} else if !errors.Is(err, orchestra.ErrContainerNotFound) {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}

	ref, err := d.ensureImage(ctx, task.Image)
	if err != nil {
		return nil, fmt.Errorf("docker: run task %q: %w", task.ID, err)
	}

	var mounts []mount.Mount
	for _, m := range task.Mounts {
		v, err := d.createVolume(ctx, m.Name)
		if err != nil {
			return nil, fmt.Errorf("docker: run task %q: mount %q: %w", task.ID, m.Name, err)
		}
		target := orchestra.MountPath(workDir, m.Path)
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: v.dockerName, Target: target})
	}

	name := containerName(d.namespace, task.ID)
	cfg := &container.Config{
		Image:      ref,
		Cmd:        task.Command,
		Env:        envList(task.Env),
		User:       task.User,
		WorkingDir: workDir,
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

	created, err := d.client.ContainerCreate(ctx, cfg, hostCfg, nil, nil, name)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			// Another driver instance created it between our lookup and
			// our create: use theirs.
			if c, ferr := d.findContainer(ctx, task.ID); ferr == nil {
				return c, nil
			}
		}
		return nil, fmt.Errorf("docker: create container %q for task %q: %w", name, task.ID, err)
	}
	for _, w := range created.Warnings {
		d.logger.Warn("engine warning on create", "task", task.ID, "container", name, "warning", w)
	}
	c := &Container{driver: d, id: created.ID, name: name, taskID: task.ID}

	if task.Stdin != nil {
		hijack, err := d.client.ContainerAttach(ctx, created.ID, container.AttachOptions{Stream: true, Stdin: true})
		if err != nil {
			d.removeQuietly(created.ID, name)
			return nil, fmt.Errorf("docker: attach stdin of container %q for task %q: %w", name, task.ID, err)
		}
		c.stdin = &hijack
	}

	if err := d.client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		if c.stdin != nil {
			c.stdin.Close()
		}
		// A command that cannot be executed leaves the container "created"
		// with an exit code (127 not found, 126 not executable) and the
		// runtime's message: report it as a finished task, like `docker run`.
		info, ierr := d.client.ContainerInspect(context.WithoutCancel(ctx), created.ID)
		if ierr == nil && info.State != nil && info.State.Status == container.StateCreated &&
			info.State.ExitCode != 0 && info.State.Error != "" {
			d.logger.Warn("task could not start", "task", task.ID, "container", name, "exit_code", info.State.ExitCode, "error", info.State.Error)
			c.remember()
			return c, nil
		}
		d.removeQuietly(created.ID, name)
		return nil, fmt.Errorf("docker: start container %q for task %q: %w", name, task.ID, err)
	}
	if c.stdin != nil {
		go c.copyStdin(task.Stdin)
	}
	d.logger.Debug("container started", "task", task.ID, "container", name, "id", created.ID)
	c.remember()
	return c, nil
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

// GetContainer returns the container running task taskID in the namespace,
// asking the engine (by label) when this driver instance did not start it.
// When there is none the error wraps orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(ctx context.Context, taskID string) (orchestra.Container, error) {
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return nil, fmt.Errorf("docker: get container for task %q: %w", taskID, orchestra.ErrClosed)
	}
	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("docker: get container for task %q: %w", taskID, err)
	}
	c, err := d.findContainer(ctx, taskID)
	if err != nil {
		return nil, fmt.Errorf("docker: get container for task %q: %w", taskID, err)
	}
	return c, nil
}

// findContainer looks taskID up in memory, then in the engine by the
// namespace and task-id labels (checked exactly).
func (d *Driver) findContainer(ctx context.Context, taskID string) (*Container, error) {
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
// "{namespace}-{name}" (sanitized) labelled with the namespace. size is
// ignored: the local volume driver has no size limit.
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
		d.logger.Debug("volume size ignored by the local volume driver", "volume", name, "size", size)
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
	_, err := d.client.VolumeCreate(ctx, volume.CreateOptions{
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
	v := &Volume{driver: d, name: name, dockerName: vname}
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

// Leaks asks the engine (not any driver's memory) for every container and
// volume labelled with namespace and describes each one. An empty result
// means nothing of the namespace is left.
func Leaks(ctx context.Context, namespace string) ([]string, error) {
	cli, err := newClient()
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
