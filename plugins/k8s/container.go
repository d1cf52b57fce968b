package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/jtarchie/pocketci/orchestra"
)

// Container is a task's pod. It implements orchestra.Container.
type Container struct {
	d      *Driver
	name   string // pod name
	taskID string
	image  string

	mu       sync.Mutex
	final    *status // set once done; never changes after
	seen     bool    // the watch has shown the pod at least once
	stdinErr error   // the task's stdin failed: the task was stopped
}

var _ orchestra.Container = (*Container)(nil)

func (d *Driver) newContainer(name, taskID, image string) *Container {
	return &Container{d: d, name: name, taskID: taskID, image: image}
}

// Status reads the pod from the driver's watch (no request per call). Once
// the task is done the result is cached. A missing image is an error
// wrapping orchestra.ErrImageNotFound; a stdin that failed is an error too,
// since the task did not get its whole input.
func (c *Container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	c.mu.Lock()
	final, serr := c.final, c.stdinErr
	c.mu.Unlock()
	if serr != nil {
		return nil, fmt.Errorf("k8s: status of task %q (pod %s): %w", c.taskID, c.name, serr)
	}
	if final != nil {
		return *final, nil
	}
	if err := c.d.watch.start(ctx); err != nil {
		return nil, fmt.Errorf("k8s: status of task %q: %w", c.taskID, err)
	}
	p, ok := c.d.watch.get(c.name)
	if !ok {
		c.mu.Lock()
		seen := c.seen
		c.mu.Unlock()
		if !seen {
			// Created, not yet seen by the watch.
			return status{}, nil
		}
		// Seen, then gone from the watch: ask once whether it still exists.
		got, err := c.d.client.CoreV1().Pods(c.d.cfg.k8sNamespace).Get(ctx, c.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("k8s: status of task %q (pod %s): %w", c.taskID, c.name, orchestra.ErrContainerNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("k8s: status of task %q (pod %s): %w", c.taskID, c.name, err)
		}
		p = got
	}
	s, err := taskState(p, c.image)
	if err != nil {
		return nil, fmt.Errorf("k8s: task %q (pod %s): %w", c.taskID, c.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = true
	if c.stdinErr != nil {
		return nil, fmt.Errorf("k8s: status of task %q (pod %s): %w", c.taskID, c.name, c.stdinErr)
	}
	if s.done {
		c.final = &s
	}
	return s, nil
}

// waitStarted waits until the container has run (so its logs answer), or
// returns the reason it cannot.
func (c *Container) waitStarted(ctx context.Context) error {
	return c.d.watch.wait(ctx, c.name, func(p *corev1.Pod) (bool, error) {
		if p == nil {
			c.mu.Lock()
			seen := c.seen
			c.mu.Unlock()
			if seen {
				return false, fmt.Errorf("pod %s: %w", c.name, orchestra.ErrContainerNotFound)
			}
			return false, nil
		}
		c.mu.Lock()
		c.seen = true
		c.mu.Unlock()
		if started(p) {
			return true, nil
		}
		_, err := taskState(p, c.image)
		return false, err
	})
}

// Logs writes the task's output, stdout and stderr apart, through the
// split-streams log query (stream=Stdout|Stderr). Without follow it is the
// output so far; after exit, the complete output, the final partial line
// included. With follow it waits for the container to start, then streams
// its output as it is written until the task exits and all of it was
// written, or ctx ends. When the runtime could not run the command at all
// (it does not exist), the runtime's message is written to stderr.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	if stderr == nil {
		stderr = io.Discard
	}
	if err := c.d.watch.start(ctx); err != nil {
		return fmt.Errorf("k8s: logs of task %q: %w", c.taskID, err)
	}
	if follow {
		if err := c.waitStarted(ctx); err != nil {
			return fmt.Errorf("k8s: follow logs of task %q (pod %s): %w", c.taskID, c.name, err)
		}
	} else if p, ok := c.d.watch.get(c.name); ok && !started(p) {
		if _, err := taskState(p, c.image); err != nil {
			return fmt.Errorf("k8s: logs of task %q (pod %s): %w", c.taskID, c.name, err)
		}
		return nil // nothing written yet
	}
	if err := c.streams(ctx, follow, stdout, stderr); err != nil {
		return fmt.Errorf("k8s: logs of task %q (pod %s): %w", c.taskID, c.name, err)
	}
	if msg := c.notRun(); msg != "" {
		if _, err := fmt.Fprintf(stderr, "%s: %s\n", notRunPrefix, msg); err != nil {
			return fmt.Errorf("k8s: logs of task %q (pod %s): %w", c.taskID, c.name, err)
		}
	}
	return nil
}

// notRunPrefix begins the line Logs writes to stderr for a command the
// runtime could not run.
const notRunPrefix = "pocketci-driver-k8s: the container runtime could not run the command"

// notRun is the runtime's message when the container terminated without
// running the task's command, else "".
func (c *Container) notRun() string {
	c.mu.Lock()
	final := c.final
	c.mu.Unlock()
	if final != nil {
		return final.notRun
	}
	p, ok := c.d.watch.get(c.name)
	if !ok {
		return ""
	}
	s, _ := taskState(p, c.image)
	return s.notRun
}

// ID is the pod's name, which GetContainer of any driver of the namespace
// finds.
func (c *Container) ID() string { return c.name }

// streams copies the stdout and the stderr log streams at the same time,
// each to its writer (one lock between them, in case they are the same).
func (c *Container) streams(ctx context.Context, follow bool, stdout, stderr io.Writer) error {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, s := range []struct {
		name string
		w    io.Writer
	}{{corev1.LogStreamStdout, stdout}, {corev1.LogStreamStderr, stderr}} {
		wg.Go(func() {
			errs[i] = c.stream(ctx, s.name, follow, &lockedWriter{mu: &mu, w: s.w})
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, errSplitUnsupported) && c.d.cfg.combinedLogs {
			c.d.logger.Warn("cluster cannot split log streams: writing all output to stdout", "task", c.taskID)
			return c.stream(context.WithoutCancel(ctx), corev1.LogStreamAll, follow, stdout)
		}
		return err
	}
	return nil
}

// errSplitUnsupported means the cluster refused the stream parameter.
var errSplitUnsupported = errors.New("the cluster cannot return stdout and stderr apart: enable the PodLogsQuerySplitStreams feature gate on kube-apiserver and kubelet, or set combined_logs (or " + EnvCombinedLogs + "=1) to accept all output on stdout")

func (c *Container) stream(ctx context.Context, which string, follow bool, w io.Writer) error {
	opts := &corev1.PodLogOptions{Container: containerName, Follow: follow}
	if which != corev1.LogStreamAll {
		opts.Stream = &which
	}
	rc, err := c.d.client.CoreV1().Pods(c.d.cfg.k8sNamespace).GetLogs(c.name, opts).Stream(ctx)
	if err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("%s: %w: %w", which, orchestra.ErrContainerNotFound, err)
		case !follow && apierrors.IsBadRequest(err) && strings.Contains(err.Error(), "waiting to start"):
			return nil // not started: nothing written yet
		case opts.Stream != nil && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) && strings.Contains(err.Error(), "stream"):
			return fmt.Errorf("%s: %w: %w", which, errSplitUnsupported, err)
		}
		return fmt.Errorf("%s: %w", which, err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("%s: %w", which, err)
	}
	return nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Cleanup deletes the pod (a running task gets a 1 s grace period). When
// the task may still run, it waits until the cluster removed the pod, which
// the kubelet does only after the containers stopped, so that no process of
// the task runs after it returns; a finished task's processes are gone
// already (the runtime kills what is left in the container when the task
// exits). It is idempotent.
func (c *Container) Cleanup(ctx context.Context) error {
	c.mu.Lock()
	done := c.final != nil
	c.mu.Unlock()
	if !done {
		if p, ok := c.d.watch.get(c.name); ok {
			s, _ := taskState(p, c.image)
			done = s.done
		}
	}
	if err := c.d.deletePod(ctx, c.name, 1); err != nil {
		return fmt.Errorf("k8s: cleanup of task %q: %w", c.taskID, err)
	}
	if done {
		return nil
	}
	if err := c.d.waitPodGone(ctx, c.name); err != nil {
		return fmt.Errorf("k8s: cleanup of task %q: %w", c.taskID, err)
	}
	return nil
}

// waitPodGone waits until the cluster no longer has the pod: the kubelet
// removes it only after its containers were stopped.
func (d *Driver) waitPodGone(ctx context.Context, name string) error {
	for {
		_, err := d.client.CoreV1().Pods(d.cfg.k8sNamespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("waiting for pod %q to go: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %q still there: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// deletePod deletes a pod; an absent one is not an error.
func (d *Driver) deletePod(ctx context.Context, name string, grace int64) error {
	err := d.client.CoreV1().Pods(d.cfg.k8sNamespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %q: %w", name, err)
	}
	return nil
}
