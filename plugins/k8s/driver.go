// Package k8s is the orchestra driver that runs tasks as Kubernetes pods
// through client-go. See README.md for the mapping of a task onto a pod,
// the configuration, the test cluster and the RBAC the driver needs.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/jtarchie/pocketci/orchestra"
)

// driverName is the driver's registered name.
const driverName = "k8s"

// maxSizeGB bounds Mount.SizeGB (1 PiB), so that it fits a quantity in bytes.
const maxSizeGB = 1 << 20

// closeTimeout bounds what Close does, since Close takes no context.
const closeTimeout = 2 * time.Minute

// Driver runs orchestra tasks as pods in one orchestra namespace.
type Driver struct {
	namespace string
	cfg       settings
	logger    *slog.Logger
	client    kubernetes.Interface

	// lifecycle is held for reading by every operation that creates
	// something in the cluster, and for writing by Close.
	lifecycle sync.RWMutex
	closed    bool
	// ctx ends when the driver closes: stdin attachments stop with it.
	ctx    context.Context
	cancel context.CancelFunc

	watch *podWatch
}

var _ orchestra.Driver = (*Driver)(nil)

// Provider builds k8s drivers from a Config (see Config for the defaults
// of its empty fields).
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider(driverName, func(_ context.Context, namespace string, cfg Config, logger *slog.Logger) (orchestra.Driver, error) {
		return New(namespace, cfg, logger)
	})
}

// New returns a driver for namespace with cfg. It does not contact the
// cluster: the first operation does. A nil logger discards.
func New(namespace string, cfg Config, logger *slog.Logger) (*Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("k8s: new driver: %w", err)
	}
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("k8s: new driver for namespace %q: %w: %w", namespace, orchestra.ErrInvalidConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rc := *s.rest
	// The default 5 QPS throttles 20 parallel tasks; the cluster's own
	// priority and fairness protects it.
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 100, 200
	}
	s.rest = &rc
	client, err := kubernetes.NewForConfig(&rc)
	if err != nil {
		return nil, fmt.Errorf("k8s: client for namespace %q: %w", namespace, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		namespace: namespace,
		cfg:       s,
		logger:    logger.With("driver", driverName, "namespace", namespace, "k8s_namespace", s.k8sNamespace),
		client:    client,
		ctx:       ctx,
		cancel:    cancel,
	}
	d.watch = newPodWatch(client, s.k8sNamespace, namespaceSelector(namespace), d.logger)
	return d, nil
}

// Name returns "k8s".
func (d *Driver) Name() string { return driverName }

// RunContainer creates the task's pod and returns without waiting for it to
// be scheduled or to run. When the namespace already has a pod for task.ID
// (made by this or another driver instance, on any host) it is returned and
// the command does not run again.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, fmt.Errorf("k8s: run container: %w", err)
	}
	if task.Image == "" {
		return nil, fmt.Errorf("k8s: run task %q: %w: Image is empty", task.ID, orchestra.ErrInvalidTask)
	}
	for i, m := range task.Mounts {
		if m.SizeGB > maxSizeGB {
			return nil, fmt.Errorf("k8s: run task %q: %w: Mounts[%d].SizeGB %d is over %d", task.ID, orchestra.ErrInvalidTask, i, m.SizeGB, maxSizeGB)
		}
	}
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("k8s: run task %q: %w", task.ID, orchestra.ErrClosed)
	}
	pod, err := d.podSpec(task)
	if err != nil {
		return nil, fmt.Errorf("k8s: run task %q: %w", task.ID, err)
	}
	if err := d.watch.start(ctx); err != nil {
		return nil, fmt.Errorf("k8s: run task %q: %w", task.ID, err)
	}
	if c, err := d.findPod(ctx, task.ID); err == nil {
		d.logger.Debug("task already has a pod", "task", task.ID, "pod", c.name)
		return c, nil
	} else if !errors.Is(err, orchestra.ErrContainerNotFound) {
		return nil, fmt.Errorf("k8s: run task %q: %w", task.ID, err)
	}
	if k := task.ContainerLimits.CPUKind; k != "" {
		d.logger.Debug("cpu kind is a hint the k8s driver does not apply", "task", task.ID, "cpu_kind", k)
	}
	for _, m := range task.Mounts {
		// SizeGB sizes a claim this task creates; an existing one keeps its size.
		if _, err := d.createVolume(ctx, m.Name, int64(m.SizeGB)<<30); err != nil {
			return nil, fmt.Errorf("k8s: run task %q: mount %q: %w", task.ID, m.Name, err)
		}
	}
	created, err := d.client.CoreV1().Pods(d.cfg.k8sNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another instance created it between our lookup and our create.
		if c, ferr := d.findPod(ctx, task.ID); ferr == nil {
			return c, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("k8s: create pod %q for task %q: %w", pod.Name, task.ID, err)
	}
	c := d.newContainer(created.Name, task.ID, task.Image)
	d.logger.Debug("pod created", "task", task.ID, "pod", created.Name, "uid", created.UID)
	if task.Stdin != nil {
		go c.attachStdin(task.Stdin)
	}
	return c, nil
}

// GetContainer returns the pod named containerID (what Container.ID
// returns) when it belongs to the driver's namespace: a pod of another
// namespace (by its labels and annotations), one being deleted, or none at
// all is an error wrapping orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(ctx context.Context, containerID string) (orchestra.Container, error) {
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("k8s: get container %q: %w", containerID, orchestra.ErrClosed)
	}
	if len(validation.IsDNS1123Label(containerID)) > 0 {
		return nil, fmt.Errorf("k8s: get container %q: not a pod name: %w", containerID, orchestra.ErrContainerNotFound)
	}
	if err := d.watch.start(ctx); err != nil {
		return nil, fmt.Errorf("k8s: get container %q: %w", containerID, err)
	}
	p, err := d.client.CoreV1().Pods(d.cfg.k8sNamespace).Get(ctx, containerID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("k8s: get container %q: no such pod in %q: %w", containerID, d.cfg.k8sNamespace, orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("k8s: get container %q: %w", containerID, err)
	}
	if !d.owns(p) {
		return nil, fmt.Errorf("k8s: get container %q: the pod is not one of namespace %q: %w", containerID, d.namespace, orchestra.ErrContainerNotFound)
	}
	if p.DeletionTimestamp != nil {
		return nil, fmt.Errorf("k8s: get container %q: the pod is being deleted: %w", containerID, orchestra.ErrContainerNotFound)
	}
	return d.newContainer(p.Name, p.Annotations[LabelTaskID], imageOf(p)), nil
}

// owns reports whether p was made by a driver of this namespace: its label
// and its exact annotation both say so, and it has a task.
func (d *Driver) owns(p *corev1.Pod) bool {
	return p.Labels[LabelNamespace] == labelValue(d.namespace) && p.Annotations[LabelNamespace] == d.namespace &&
		p.Annotations[LabelTaskID] != ""
}

// findPod lists the pods labelled with the namespace and task ID and
// returns the one whose annotations name exactly this namespace and task.
func (d *Driver) findPod(ctx context.Context, taskID string) (*Container, error) {
	list, err := d.client.CoreV1().Pods(d.cfg.k8sNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: namespaceSelector(d.namespace) + "," + LabelTaskID + "=" + labelValue(taskID),
	})
	if err != nil {
		return nil, fmt.Errorf("list pods of task %q: %w", taskID, err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Annotations[LabelNamespace] != d.namespace || p.Annotations[LabelTaskID] != taskID || p.DeletionTimestamp != nil {
			continue
		}
		return d.newContainer(p.Name, taskID, imageOf(p)), nil
	}
	return nil, fmt.Errorf("task %q in namespace %q: %w", taskID, d.namespace, orchestra.ErrContainerNotFound)
}

func imageOf(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == containerName {
			return c.Image
		}
	}
	return ""
}

// Close deletes every pod labelled with the namespace (running ones too) and
// waits for them to go, then every such PVC, and waits for the PVs the
// cluster deletes with them. It logs each failure, continues, and returns
// them joined. Calls after the first return nil.
func (d *Driver) Close() error {
	d.lifecycle.Lock()
	defer d.lifecycle.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.cancel()
	d.watch.stop()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := removeNamespace(ctx, d.client, d.cfg.k8sNamespace, d.namespace)
	if err != nil {
		d.logger.Warn("close finished with errors", "err", err)
	} else {
		d.logger.Debug("closed")
	}
	return err
}
