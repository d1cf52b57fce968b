package docker

import "github.com/jtarchie/pocketci/orchestra"

// Labels put on every container and volume the driver creates.
const (
	// LabelNamespace holds the driver's namespace.
	LabelNamespace = "pocketci.namespace"
	// LabelTaskID holds the task ID a container runs.
	LabelTaskID = "pocketci.task-id"
	// LabelVolume holds the volume name as given to CreateVolume or a Mount.
	LabelVolume = "pocketci.volume"
	// LabelSandbox holds the task ID a sandbox container was started for
	// (a sandbox has no LabelTaskID: it is not a task's container).
	LabelSandbox = "pocketci.sandbox"
	// LabelHelper marks a throwaway container the driver uses for its own
	// work ("volume-data": moving a volume's files).
	LabelHelper = "pocketci.helper"
)

// workDir is every container's working directory: relative mount paths are
// mounted below it (orchestra.MountPath), so ./<path> reaches them.
const workDir = "/"

// containerName is the Docker name of the container running taskID in
// namespace: "{namespace}-{taskID}" made valid by orchestra.DockerNameRule
// (a short hash added when that changed it, so two IDs never collide).
func containerName(namespace, taskID string) string {
	return orchestra.SafeName(orchestra.DockerNameRule, namespace, taskID)
}

// volumeName is the Docker name of volume name in namespace, made the same
// way as containerName.
func volumeName(namespace, name string) string {
	return orchestra.SafeName(orchestra.DockerNameRule, namespace, name)
}
