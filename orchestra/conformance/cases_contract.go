package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// caseContainerID checks that a container's ID finds it again: from the same
// driver, and from a second driver instance opened in the same namespace.
func caseContainerID(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "find-me", "echo", "found"))
	if err != nil {
		return err
	}
	id := r.Container.ID()
	if id == "" {
		return errors.New("Container.ID() is empty")
	}
	if err := expectFound(ctx, "the same driver", env.Driver, id, "found\n"); err != nil {
		return err
	}
	second, err := env.Options.New(env.Namespace)
	if err != nil {
		return fmt.Errorf("a second driver in namespace %q: %w", env.Namespace, err)
	}
	defer func() { _ = second.Close() }()
	return expectFound(ctx, "a second driver of the namespace", second, id, "found\n")
}

// caseVolumeSecondInstance checks that a volume outlives the driver
// instance that wrote it: a second instance opened in the same namespace
// (as a later run of a pipeline does) mounts it with its files.
func caseVolumeSecondInstance(ctx context.Context, env *Env) error {
	w := task(env, "persist-write", "sh", "-c", "echo kept > data/file")
	w.Mounts = orchestra.Mounts{{Name: "persist", Path: "data"}}
	r, err := runToEnd(ctx, env, w)
	if err != nil {
		return err
	}
	if err := expect(w.ID, r, 0, "", nil); err != nil {
		return err
	}
	second, err := env.Options.New(env.Namespace)
	if err != nil {
		return fmt.Errorf("a second driver in namespace %q: %w", env.Namespace, err)
	}
	defer func() { _ = second.Close() }()
	rd := task(env, "persist-read", "cat", "data/file")
	rd.Mounts = orchestra.Mounts{{Name: "persist", Path: "data"}}
	r, err = testkit.RunToEnd(ctx, second, rd)
	if err != nil {
		return fmt.Errorf("through a second driver of the namespace: %w", err)
	}
	if err := expect(rd.ID, r, 0, "kept\n", nil); err != nil {
		return fmt.Errorf("the volume written through the first driver, read through a second: %w", err)
	}
	return nil
}

// expectFound finds container id through d and checks its status and output.
func expectFound(ctx context.Context, via string, d orchestra.Driver, id, stdout string) error {
	c, err := d.GetContainer(ctx, id)
	if errors.Is(err, errors.ErrUnsupported) {
		return skip("the driver does not find containers again (GetContainer: " + err.Error() + ")")
	}
	if err != nil {
		return fmt.Errorf("GetContainer(%q) through %s: %w", id, via, err)
	}
	if got := c.ID(); got != id {
		return fmt.Errorf("GetContainer(%q) through %s: the container's ID is %q", id, via, got)
	}
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		return fmt.Errorf("container %q found through %s: %w", id, via, err)
	}
	out, _, err := logs(ctx, c)
	if err != nil {
		return fmt.Errorf("container %q found through %s: %w", id, via, err)
	}
	if st.ExitCode() != 0 || string(out) != stdout {
		return fmt.Errorf("container %q found through %s: exit %d, stdout %s; want 0 and %q", id, via, st.ExitCode(), show(out), stdout)
	}
	return nil
}

// caseUnknownContainer checks that an ID nobody gave is ErrContainerNotFound.
func caseUnknownContainer(ctx context.Context, env *Env) error {
	_, err := env.Driver.GetContainer(ctx, "no-such-container-"+env.Namespace)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return skip("the driver does not find containers again")
	case err == nil:
		return errors.New("GetContainer of an unknown ID returned a container and no error")
	case !errors.Is(err, orchestra.ErrContainerNotFound):
		return fmt.Errorf("GetContainer of an unknown ID: want an error that is orchestra.ErrContainerNotFound, got %v", err)
	}
	return nil
}

// caseVolumePath checks that a volume says where it is, the same each time.
func caseVolumePath(ctx context.Context, env *Env) error {
	v, err := env.Driver.CreateVolume(ctx, "where", 0)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	again, err := env.Driver.CreateVolume(ctx, "where", 0)
	if err != nil {
		return fmt.Errorf("create volume again: %w", err)
	}
	switch {
	case v.Path() == "":
		return errors.New("Volume.Path() is empty")
	case again.Path() != v.Path():
		return fmt.Errorf("Volume.Path() changed between two CreateVolume calls: %q, then %q", v.Path(), again.Path())
	case v.Name() != "where":
		return fmt.Errorf("Volume.Name() is %q, want %q", v.Name(), "where")
	}
	return nil
}

// caseWorkDir checks that WorkDir is where the command starts: relative to
// the default working directory (inside a mounted input, as pocketci's
// run.dir is), or absolute.
func caseWorkDir(ctx context.Context, env *Env) error {
	in := task(env, "workdir-relative", "sh", "-c", "echo made > here.txt; pwd")
	in.Mounts = orchestra.Mounts{{Name: "workdir-repo", Path: "repo"}}
	in.WorkDir = "repo"
	r, err := runToEnd(ctx, env, in)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 || !strings.HasSuffix(strings.TrimSpace(string(r.Stdout)), "/repo") {
		return fmt.Errorf("task %q (WorkDir repo): exit %d, pwd %s; want 0 and a path ending in /repo", in.ID, r.ExitCode, show(r.Stdout))
	}
	check := task(env, "workdir-check", "cat", "other/here.txt")
	check.Mounts = orchestra.Mounts{{Name: "workdir-repo", Path: "other"}}
	if r, err = runToEnd(ctx, env, check); err != nil {
		return err
	}
	if err := expect(check.ID, r, 0, "made\n", nil); err != nil {
		return fmt.Errorf("a file written in WorkDir is not in the volume mounted there: %w", err)
	}
	abs := task(env, "workdir-absolute", "pwd")
	abs.WorkDir = "/tmp"
	if r, err = runToEnd(ctx, env, abs); err != nil {
		return err
	}
	if r.ExitCode != 0 || !strings.HasSuffix(strings.TrimSpace(string(r.Stdout)), "/tmp") {
		return fmt.Errorf("task %q (WorkDir /tmp): exit %d, pwd %s; want 0 and a path ending in /tmp", abs.ID, r.ExitCode, show(r.Stdout))
	}
	return nil
}

// caseNestedMounts checks that a volume mounted inside another (a cache
// inside an input) gets the files written under it, and the outer volume
// does not.
func caseNestedMounts(ctx context.Context, env *Env) error {
	w := task(env, "nested-write", "sh", "-c", "echo inner > repo/cache/in.txt && echo outer > repo/out.txt")
	w.Mounts = orchestra.Mounts{{Name: "nested-repo", Path: "repo"}, {Name: "nested-cache", Path: "repo/cache"}}
	r, err := runToEnd(ctx, env, w)
	if err != nil {
		return err
	}
	if err := expect(w.ID, r, 0, "", nil); err != nil {
		return err
	}
	rd := task(env, "nested-read", "sh", "-c", "cat c/in.txt r/out.txt; test ! -e r/cache/in.txt && echo apart")
	rd.Mounts = orchestra.Mounts{{Name: "nested-repo", Path: "r"}, {Name: "nested-cache", Path: "c"}}
	if r, err = runToEnd(ctx, env, rd); err != nil {
		return err
	}
	return expect(rd.ID, r, 0, "inner\nouter\napart\n", nil)
}

// caseCommandNotFound checks that a command that does not exist is the
// task's failure (exit 127, a word on its stderr), not the driver's.
func caseCommandNotFound(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "not-found", "no-such-command-ct"))
	if err != nil {
		return err
	}
	if r.ExitCode != 127 || len(r.Stderr) == 0 {
		return fmt.Errorf("a command that does not exist: exit %d, stderr %s; want 127 and a message on stderr", r.ExitCode, show(r.Stderr))
	}
	return nil
}

// caseTaskHints checks that a mount's SizeGB and a CPUKind are accepted.
func caseTaskHints(ctx context.Context, env *Env) error {
	t := task(env, "hints", "sh", "-c", "echo sized > data/f && cat data/f")
	t.Mounts = orchestra.Mounts{{Name: "sized", Path: "data", SizeGB: 1}}
	t.ContainerLimits.CPUKind = "shared"
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	return expect(t.ID, r, 0, "sized\n", nil)
}
