package host

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// Interfaces the host can tell a driver implements, beside orchestra.Driver.
const (
	ImplementsContainerFinder = "ContainerFinder"
	ImplementsLogFollower     = "LogFollower"
)

// followReporter is what a wire-level driver implements when its protocol
// says, per driver, whether it follows logs (today the wire says so per
// container only).
type followReporter interface {
	FollowsLogs() bool
}

// Implements opens a throwaway, ephemeral namespace in the plugin and
// reports which optional orchestra interfaces its driver implements: true
// or false, or absent when the plugin's protocol does not say.
func (p *Plugin) Implements(ctx context.Context) (map[string]bool, error) {
	ns := fmt.Sprintf("orchestra-probe-%d-%d", os.Getpid(), time.Now().UnixNano())
	d, err := p.Open(ctx, ns, OpenOptions{Ephemeral: true})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	inner, _, err := d.(interface {
		current(context.Context) (orchestra.Driver, uint64, error)
	}).current(ctx)
	if err == nil {
		_, out[ImplementsContainerFinder] = inner.(orchestra.ContainerFinder)
		if fr, ok := inner.(followReporter); ok {
			out[ImplementsLogFollower] = fr.FollowsLogs()
		}
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return out, err
}
