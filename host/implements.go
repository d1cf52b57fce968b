package host

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jtarchie/pocketci/internal/wire"
)

// Optional orchestra interfaces the host can tell a plugin's driver
// implements.
const (
	ImplementsVolumeData = wire.ImplementsVolumeData
	ImplementsSandbox    = wire.ImplementsSandbox
)

// Implements opens a throwaway, ephemeral namespace in the plugin and
// reports which optional orchestra interfaces its driver implements.
func (p *Plugin) Implements(ctx context.Context) (map[string]bool, error) {
	ns := fmt.Sprintf("orchestra-probe-%d-%d", os.Getpid(), time.Now().UnixNano())
	d, err := p.Open(ctx, ns, OpenOptions{Ephemeral: true})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{ImplementsVolumeData: false, ImplementsSandbox: false}
	for _, name := range wire.ImplementsOf(wire.Base(d).(*hostDriver).inner) {
		out[name] = true
	}
	return out, d.Close()
}
