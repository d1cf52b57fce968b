package conformance

import (
	"context"
	"fmt"
	"strings"

	"github.com/jtarchie/pocketci/orchestra"
)

// awkwardIDs are task IDs the contract allows and pocketci really sends:
// nanoid IDs start with '_' or '-', IDs built from job and task names have
// spaces and unicode, and long pipelines make IDs over 200 bytes.
var awkwardIDs = []string{
	"_nanoid-V1StGXR8_Z5jdHi6B",
	"-nanoid_4f90d13a42",
	"job name / task name",
	"ünïcødé-日本語-✓",
	strings.Repeat("a-long-task-id-", 15), // 225 bytes
}

// caseAwkwardTaskIDs runs a task under each awkward ID, then runs each ID
// again: the second RunContainer gives the finished task back and does not
// run the command a second time.
func caseAwkwardTaskIDs(ctx context.Context, env *Env) error {
	mounts := orchestra.Mounts{{Name: "awkward-ids", Path: "/data"}}
	for i, id := range awkwardIDs {
		t := task(env, id, "sh", "-c", fmt.Sprintf("echo x >> ./data/count-%d; echo ran-%d", i, i))
		t.Mounts = mounts
		r, err := runToEnd(ctx, env, t)
		if err != nil {
			return err
		}
		if err := expect(id, r, 0, fmt.Sprintf("ran-%d\n", i), ptr("")); err != nil {
			return err
		}
		again, err := runToEnd(ctx, env, t)
		if err != nil {
			return fmt.Errorf("the same ID again: %w", err)
		}
		if err := expect(id, again, 0, fmt.Sprintf("ran-%d\n", i), ptr("")); err != nil {
			return fmt.Errorf("the same ID again: %w", err)
		}
	}
	cmd := "cat"
	want := ""
	for i := range awkwardIDs {
		cmd += fmt.Sprintf(" ./data/count-%d", i)
		want += "x\n"
	}
	rd := task(env, "awkward-ids-read", "sh", "-c", cmd)
	rd.Mounts = mounts
	r, err := runToEnd(ctx, env, rd)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 || string(r.Stdout) != want {
		return fmt.Errorf("each awkward ID should have run its command exactly once: expected the counters to hold %s, got %s (exit %d, stderr %s)",
			show([]byte(want)), show(r.Stdout), r.ExitCode, show(r.Stderr))
	}
	return nil
}

// caseRelativeMountShared mounts one volume at relative paths (as
// pocketci's runtime does, with resource names) in two tasks: the second
// reads what the first wrote, at <working dir>/<path>.
func caseRelativeMountShared(ctx context.Context, env *Env) error {
	w := task(env, "relative-write", "sh", "-c", "echo shared > ./repo-output/file")
	w.Mounts = orchestra.Mounts{{Name: "relative", Path: "repo-output"}}
	r, err := runToEnd(ctx, env, w)
	if err != nil {
		return err
	}
	if err := expect(w.ID, r, 0, "", ptr("")); err != nil {
		return err
	}
	rd := task(env, "relative-read", "cat", "in/here/file")
	rd.Mounts = orchestra.Mounts{{Name: "relative", Path: "in/here"}}
	r, err = runToEnd(ctx, env, rd)
	if err != nil {
		return err
	}
	return expect(rd.ID, r, 0, "shared\n", ptr(""))
}
