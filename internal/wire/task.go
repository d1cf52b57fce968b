package wire

import (
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Task conversion, shared by both halves: the host sends a task with
// taskToProto and the plugin rebuilds it with taskFromProto.

func taskFromProto(t *driverv1.Task) orchestra.Task {
	task := orchestra.Task{
		Command:         t.GetCommand(),
		ContainerLimits: orchestra.ContainerLimits{CPU: t.GetCpu(), CPUKind: t.GetCpuKind(), Memory: t.GetMemory()},
		Env:             t.GetEnv(),
		ID:              t.GetId(),
		Image:           t.GetImage(),
		Privileged:      t.GetPrivileged(),
		User:            t.GetUser(),
		WorkDir:         t.GetWorkDir(),
	}
	if task.Env == nil {
		task.Env = map[string]string{}
	}
	for _, m := range t.GetMounts() {
		task.Mounts = append(task.Mounts, orchestra.Mount{Name: m.GetName(), Path: m.GetPath(), SizeGB: int(m.GetSizeGb())})
	}
	return task
}

func taskToProto(t orchestra.Task) *driverv1.Task {
	pt := &driverv1.Task{
		Command:    t.Command,
		Cpu:        t.ContainerLimits.CPU,
		Memory:     t.ContainerLimits.Memory,
		Env:        t.Env,
		Id:         t.ID,
		Image:      t.Image,
		Privileged: t.Privileged,
		User:       t.User,
		WorkDir:    t.WorkDir,
		CpuKind:    t.ContainerLimits.CPUKind,
	}
	for _, m := range t.Mounts {
		pt.Mounts = append(pt.Mounts, &driverv1.Mount{Name: m.Name, Path: m.Path, SizeGb: int32(m.SizeGB)})
	}
	return pt
}
