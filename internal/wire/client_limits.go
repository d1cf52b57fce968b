package wire

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Message limits. A plugin accepts a task of up to maxTask on its bulk
// socket. A task over the limit is refused before it is sent, with
// orchestra.ErrInvalidTask naming its largest field and the limit, instead
// of a transport error, which names nothing.
const (
	maxTask      = 64 << 20
	maxTaskSlack = 1 << 20
)

// checkTaskSize refuses a request over the plugin's limit.
func (c *Client) checkTaskSize(req *driverv1.RunContainerRequest) error {
	limit := maxTask
	size := proto.Size(req)
	if size <= limit {
		return nil
	}
	t := req.GetTask()
	fields := map[string]int{"Command": 0, "Env": 0, "Mounts": 0, "ID": len(t.GetId()), "Image": len(t.GetImage()), "User": len(t.GetUser()), "WorkDir": len(t.GetWorkDir())}
	for _, a := range t.GetCommand() {
		fields["Command"] += len(a)
	}
	for k, v := range t.GetEnv() {
		fields["Env"] += len(k) + len(v)
	}
	for _, m := range t.GetMounts() {
		fields["Mounts"] += len(m.GetName()) + len(m.GetPath())
	}
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return fields[names[i]] > fields[names[j]] })
	return fmt.Errorf("plugin %s: RunContainer: task %q is %s, over the %s a task may take through this plugin; its largest field is %s (%s): %w",
		c.name, t.GetId(), mib(size), mib(limit), names[0], mib(fields[names[0]]), orchestra.ErrInvalidTask)
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
