package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/jtarchie/pocketci/orchestra"
)

func TestResources(t *testing.T) {
	tests := []struct {
		in      orchestra.ContainerLimits
		cpu     string
		memory  string
		request bool
	}{
		{orchestra.ContainerLimits{}, "", "", false},
		{orchestra.ContainerLimits{CPU: 1024}, "1", "", true},
		{orchestra.ContainerLimits{CPU: 512}, "500m", "", true},
		{orchestra.ContainerLimits{CPU: 1}, "1m", "", true},
		{orchestra.ContainerLimits{Memory: 64 << 20}, "", "64Mi", false},
	}
	for _, tc := range tests {
		r := resources(tc.in)
		cpu, mem := r.Limits[corev1.ResourceCPU], r.Limits[corev1.ResourceMemory]
		if tc.cpu != "" && cpu.String() != tc.cpu || tc.cpu == "" && !cpu.IsZero() {
			t.Errorf("%+v: cpu limit %s, want %q", tc.in, cpu.String(), tc.cpu)
		}
		if tc.memory != "" && mem.String() != tc.memory || tc.memory == "" && !mem.IsZero() {
			t.Errorf("%+v: memory limit %s, want %q", tc.in, mem.String(), tc.memory)
		}
		if _, ok := r.Requests[corev1.ResourceCPU]; ok != tc.request {
			t.Errorf("%+v: cpu request set %v, want %v", tc.in, ok, tc.request)
		}
	}
}

func TestParseUser(t *testing.T) {
	tests := []struct {
		in       string
		uid      int64
		gid      int64 // -1: none
		rejected bool
	}{
		{"0", 0, -1, false},
		{"root", 0, -1, false},
		{"1000", 1000, -1, false},
		{"1000:2000", 1000, 2000, false},
		{"root:root", 0, 0, false},
		{"nobody", 0, 0, true},
		{"1000:staff", 0, 0, true},
		{"-1", 0, 0, true},
		{"99999999999", 0, 0, true},
	}
	for _, tc := range tests {
		uid, gid, err := parseUser(tc.in)
		if tc.rejected {
			if err == nil {
				t.Errorf("%q accepted", tc.in)
			}
			continue
		}
		if err != nil || uid != tc.uid || (gid == nil) != (tc.gid == -1) || gid != nil && *gid != tc.gid {
			t.Errorf("%q: uid %d gid %v err %v", tc.in, uid, gid, err)
		}
	}
}

// TestPodSpecWorkDirAndMounts: WorkDir sets the container's working
// directory (relative under "/", absolute as is) without moving the mounts;
// nested mounts are separate claims at nested paths.
func TestPodSpecWorkDirAndMounts(t *testing.T) {
	d := &Driver{namespace: "ns", cfg: settings{k8sNamespace: "default"}}
	mounts := orchestra.Mounts{{Name: "repo", Path: "repo"}, {Name: "cache", Path: "repo/cache"}}
	tests := []struct {
		workDir string
		want    string
	}{
		{"", "/"},
		{"repo", "/repo"},
		{"repo/sub", "/repo/sub"},
		{"/tmp", "/tmp"},
	}
	for _, tc := range tests {
		pod, err := d.podSpec(orchestra.Task{ID: "t", Image: "busybox", WorkDir: tc.workDir, Mounts: mounts, Command: []string{"pwd"}})
		if err != nil {
			t.Fatal(err)
		}
		c := pod.Spec.Containers[0]
		if c.WorkingDir != tc.want {
			t.Errorf("WorkDir %q: workingDir %q, want %q", tc.workDir, c.WorkingDir, tc.want)
		}
		got := map[string]string{}
		for _, m := range c.VolumeMounts {
			got[m.MountPath] = m.Name
		}
		if len(got) != 2 || got["/repo"] == "" || got["/repo/cache"] == "" || got["/repo"] == got["/repo/cache"] {
			t.Errorf("WorkDir %q: mounts %v, want /repo and /repo/cache from two volumes", tc.workDir, got)
		}
	}
}
