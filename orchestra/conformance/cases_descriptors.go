package conformance

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// listingDir is the target of the descriptor `ls` opens to read
// /proc/self/fd: the only one a task may see besides 0, 1 and 2.
var listingDir = regexp.MustCompile(`^/proc/(self|[0-9]+)/fd/?$`)

// caseOnlyStandardDescriptors: a task starts with stdin, stdout and stderr
// open and nothing else, as in a container; no pipe, lock or socket of the
// driver (or of whatever started the driver) reaches it. Listing
// /proc/self/fd shows 0, 1, 2 and the directory the listing itself opened.
func caseOnlyStandardDescriptors(ctx context.Context, env *Env) error {
	const id = "only-standard-descriptors"
	r, err := runToEnd(ctx, env, task(env, id, "ls", "-l", "/proc/self/fd/"))
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("task %q: ls -l /proc/self/fd/ exited %d (stdout %s, stderr %s)", id, r.ExitCode, show(r.Stdout), show(r.Stderr))
	}
	seen := map[string]bool{}
	var extra []string
	for _, line := range strings.Split(string(r.Stdout), "\n") {
		before, target, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		fields := strings.Fields(before)
		if len(fields) == 0 {
			continue
		}
		fd := fields[len(fields)-1]
		seen[fd] = true
		if fd != "0" && fd != "1" && fd != "2" && !listingDir.MatchString(strings.TrimSpace(target)) {
			extra = append(extra, fd+" -> "+strings.TrimSpace(target))
		}
	}
	if !seen["0"] || !seen["1"] || !seen["2"] {
		return fmt.Errorf("task %q: ls -l /proc/self/fd/ did not list 0, 1 and 2 (stdout %s)", id, show(r.Stdout))
	}
	if len(extra) > 0 {
		return fmt.Errorf("task %q: the task inherited descriptors besides 0, 1 and 2: %s", id, strings.Join(extra, ", "))
	}
	return nil
}
