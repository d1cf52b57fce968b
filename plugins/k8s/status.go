package k8s

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/jtarchie/pocketci/orchestra"
)

// status is a ContainerStatus.
type status struct {
	done bool
	code int
	// notRun is the runtime's message when the container could not run
	// the task's command at all (a command that does not exist): the task
	// wrote nothing, so Logs writes this to its stderr.
	notRun string
}

func (s status) IsDone() bool  { return s.done }
func (s status) ExitCode() int { return s.code }

// imageMissing are the waiting reasons that mean the image is absent and
// will not be pulled (ErrImagePull is retried and turns into
// ImagePullBackOff when it keeps failing).
var imageMissing = map[string]bool{
	"ErrImageNeverPull": true,
	"ImagePullBackOff":  true,
	"InvalidImageName":  true,
}

// failedToCreate are waiting reasons the kubelet retries forever that no
// retry fixes; Status reports them as errors.
var failedToCreate = map[string]bool{
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
}

// taskState reads the task's state from its pod: done and the exit code, or
// an error when the task cannot run (the image is missing, the pod failed
// without the container running). A nil pod is not done.
func taskState(p *corev1.Pod, image string) (status, error) {
	if p == nil {
		return status{}, nil
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != containerName {
			continue
		}
		if t := cs.State.Terminated; t != nil {
			return terminated(t), nil
		}
		if w := cs.State.Waiting; w != nil {
			if imageMissing[w.Reason] {
				return status{}, fmt.Errorf("image %q: %w (%s: %s)", image, orchestra.ErrImageNotFound, w.Reason, w.Message)
			}
			if failedToCreate[w.Reason] {
				return status{}, fmt.Errorf("pod %q cannot start its container: %s: %s", p.Name, w.Reason, w.Message)
			}
		}
	}
	if p.Status.Phase == corev1.PodFailed {
		// Failed with no terminated container: evicted, or rejected by the node.
		return status{}, fmt.Errorf("pod %q failed before its container ran: %s: %s", p.Name, p.Status.Reason, p.Status.Message)
	}
	return status{}, nil
}

// terminated is the state of a task whose container terminated: the
// container's exit code, 137 when the kernel killed it for memory, and
// 127/126 like a shell when the runtime could not execute the command
// (containerd reports 128 for both), with the runtime's message.
func terminated(t *corev1.ContainerStateTerminated) status {
	s := status{done: true, code: int(t.ExitCode)}
	switch t.Reason {
	case "OOMKilled":
		s.code = 137
	case "StartError", "ContainerCannotRun":
		s.notRun = strings.TrimSpace(t.Message)
		if s.notRun == "" {
			s.notRun = t.Reason
		}
		msg := strings.ToLower(t.Message)
		switch {
		case strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory"):
			s.code = 127
		case strings.Contains(msg, "permission denied"):
			s.code = 126
		}
	}
	return s
}

// started reports whether the task's container has run (running now or
// terminated), so that its logs and attach endpoints answer.
func started(p *corev1.Pod) bool {
	if p == nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == containerName && (cs.State.Running != nil || cs.State.Terminated != nil) {
			return true
		}
	}
	return false
}
