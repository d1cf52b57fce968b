package k8s

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/jtarchie/pocketci/orchestra"
)

// workDir is the task's default working directory: "/", so that
// ./<mount path> reaches an absolute mount and a relative mount path lands
// under it, as on the other drivers (orchestra.MountPath). Task.WorkDir
// moves the command elsewhere (orchestra.WorkingDir); mounts stay put.
const workDir = "/"

// podSpec maps task onto a pod in the driver's namespace. The task was
// validated; the user is checked here.
func (d *Driver) podSpec(task orchestra.Task) (*corev1.Pod, error) {
	sc, err := securityContext(task)
	if err != nil {
		return nil, err
	}
	c := corev1.Container{
		Name: containerName,
		// Args, not Command: the image's entrypoint is kept, as Docker's Cmd does.
		Args:                     escapeAll(task.Command),
		Image:                    task.Image,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Env:                      envList(task.Env),
		WorkingDir:               orchestra.WorkingDir(workDir, task),
		SecurityContext:          sc,
		Resources:                resources(task.ContainerLimits),
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	if task.Stdin != nil {
		c.Stdin = true
		c.StdinOnce = true
	}
	var volumes []corev1.Volume
	seen := map[string]string{} // claim name -> pod volume name
	for i, m := range task.Mounts {
		claim := claimName(d.namespace, m.Name)
		vol, ok := seen[claim]
		if !ok {
			vol = "v" + strconv.Itoa(i)
			seen[claim] = vol
			volumes = append(volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
			}})
		}
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: vol, MountPath: orchestra.MountPath(workDir, m.Path)})
	}
	no, yes := false, true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName(d.namespace, task.ID),
			Namespace: d.cfg.k8sNamespace,
			Labels: map[string]string{
				LabelNamespace: labelValue(d.namespace),
				LabelTaskID:    labelValue(task.ID),
			},
			Annotations: map[string]string{
				LabelNamespace: d.namespace,
				LabelTaskID:    task.ID,
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			Containers:                   []corev1.Container{c},
			Volumes:                      volumes,
			EnableServiceLinks:           &no,
			AutomountServiceAccountToken: &no,
			// The sandbox is PID 1, not the task: a task can signal itself
			// (PID 1 ignores signals it has no handler for), and the runtime
			// kills everything left in the container when the task exits.
			ShareProcessNamespace: &yes,
		},
	}, nil
}

// envList is task.Env sorted by name.
func envList(env map[string]string) []corev1.EnvVar {
	list := make([]corev1.EnvVar, 0, len(env))
	for k, v := range env {
		list = append(list, corev1.EnvVar{Name: k, Value: escapeRefs(v)})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

// escapeRefs keeps s literal: Kubernetes expands $(VAR) in a container's
// args and env values and turns $$ into $, so every $ is doubled.
func escapeRefs(s string) string { return strings.ReplaceAll(s, "$", "$$") }

func escapeAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = escapeRefs(a)
	}
	return out
}

// resources maps Docker-style CPU shares (1024 = one CPU) to a request and
// limit in millicores, and memory bytes to a limit (the request defaults to
// it).
func resources(l orchestra.ContainerLimits) corev1.ResourceRequirements {
	var r corev1.ResourceRequirements
	if l.CPU == 0 && l.Memory == 0 {
		return r
	}
	r.Limits = corev1.ResourceList{}
	if l.CPU > 0 {
		milli := max(l.CPU*1000/1024, 1)
		q := *resource.NewMilliQuantity(milli, resource.DecimalSI)
		r.Requests = corev1.ResourceList{corev1.ResourceCPU: q}
		r.Limits[corev1.ResourceCPU] = q
	}
	if l.Memory > 0 {
		r.Limits[corev1.ResourceMemory] = *resource.NewQuantity(l.Memory, resource.BinarySI)
	}
	return r
}

// securityContext maps Privileged and User. User may be empty (the image's
// user), "root", a numeric UID, or UID:GID with a numeric GID. Names other
// than root cannot be resolved by Kubernetes and are refused.
func securityContext(task orchestra.Task) (*corev1.SecurityContext, error) {
	sc := &corev1.SecurityContext{}
	if task.Privileged {
		yes := true
		sc.Privileged = &yes
	}
	if task.User != "" {
		uid, gid, err := parseUser(task.User)
		if err != nil {
			return nil, fmt.Errorf("%w: task %q: %w", orchestra.ErrInvalidTask, task.ID, err)
		}
		sc.RunAsUser = &uid
		if gid != nil {
			sc.RunAsGroup = gid
		}
	}
	return sc, nil
}

// parseUser parses "root", "UID" or "UID:GID" ("root" may stand for either
// number).
func parseUser(user string) (int64, *int64, error) {
	num := func(s string) (int64, error) {
		if s == "root" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<31-1 {
			return 0, fmt.Errorf("User %q: the k8s driver supports root, a numeric UID or UID:GID (Kubernetes cannot look up user names)", user)
		}
		return n, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := num(u)
	if err != nil {
		return 0, nil, err
	}
	if !hasGroup {
		return uid, nil, nil
	}
	gid, err := num(g)
	if err != nil {
		return 0, nil, err
	}
	return uid, &gid, nil
}
