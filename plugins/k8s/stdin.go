package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
)

// attachStdin waits for the container to run, attaches to its stdin
// (stdinOnce: the container's stdin closes when this attachment ends) and
// streams r into it, in chunks, through client-go's remotecommand
// (WebSocket, falling back to SPDY).
//
// When r fails (an error other than io.EOF) the task must not see a clean
// end of input: the attachment is held open, the failure is recorded
// (Status reports it from then on) and the pod is deleted, so the task
// never finishes as if its input were complete.
func (c *Container) attachStdin(r io.Reader) {
	ctx := c.d.ctx
	log := c.d.logger.With("task", c.taskID, "pod", c.name)
	if err := c.waitStarted(ctx); err != nil {
		log.Debug("stdin not attached: the container did not start", "err", err)
		return
	}
	req := c.d.client.CoreV1().RESTClient().Post().Resource("pods").
		Namespace(c.d.cfg.k8sNamespace).Name(c.name).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: containerName, Stdin: true}, scheme.ParameterCodec)
	exec, err := newExecutor(c.d, req.URL())
	if err != nil {
		c.failStdin(fmt.Errorf("attach stdin: %w", err))
		return
	}
	in := &stdinReader{r: r, c: c, ctx: ctx}
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: in})
	switch {
	case in.failed():
		// failStdin already ran.
	case err != nil && ctx.Err() == nil:
		// The task may have exited before reading all of its input (like
		// `head`): that is the task's business, not a failure of ours,
		// unless the container is still running.
		if p, ok := c.d.watch.get(c.name); ok {
			if s, _ := taskState(p, c.image); s.done {
				log.Debug("stdin attachment ended with the task", "bytes", in.n, "err", err)
				return
			}
		}
		c.failStdin(fmt.Errorf("stdin attachment broke after %d bytes: %w", in.n, err))
	default:
		log.Debug("stdin copied", "bytes", in.n)
	}
}

func newExecutor(d *Driver, u *url.URL) (remotecommand.Executor, error) {
	ws, err := remotecommand.NewWebSocketExecutor(d.cfg.rest, "GET", u.String())
	if err != nil {
		return nil, fmt.Errorf("websocket executor: %w", err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(d.cfg.rest, "POST", u)
	if err != nil {
		return nil, fmt.Errorf("spdy executor: %w", err)
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// failStdin records err as the task's failure, deletes its pod and waits
// (a while) for it to be gone, so that the task is killed before its stdin
// can close.
func (c *Container) failStdin(err error) {
	c.mu.Lock()
	first := c.stdinErr == nil
	if first {
		c.stdinErr = fmt.Errorf("stdin of the task failed, the task was stopped: %w", err)
	}
	c.mu.Unlock()
	if !first {
		return
	}
	c.d.logger.Warn("stdin of the task failed: deleting its pod", "task", c.taskID, "pod", c.name, "err", err)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.d.ctx), closeTimeout)
	defer cancel()
	if derr := c.d.deletePod(ctx, c.name, 1); derr != nil {
		c.d.logger.Warn("could not delete the pod of a task whose stdin failed", "task", c.taskID, "err", derr)
		return
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	_ = c.d.watch.wait(wctx, c.name, func(p *corev1.Pod) (bool, error) { return p == nil, nil })
}

// stdinReader passes r through, counting bytes. On a read error it stops
// the task (failStdin) before returning, so the attachment never ends with
// a clean EOF on a failed input.
type stdinReader struct {
	r   io.Reader
	c   *Container
	ctx context.Context
	n   int64

	mu   sync.Mutex
	fail bool
}

func (s *stdinReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		s.mu.Lock()
		s.fail = true
		s.mu.Unlock()
		s.c.failStdin(fmt.Errorf("reading the task's stdin after %d bytes: %w", s.n, err))
		return n, err
	}
	return n, err
}

func (s *stdinReader) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail
}
