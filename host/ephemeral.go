package host

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ephemeralList is the file where the plugin's reaper finds the ephemeral
// namespaces still open: in the host's private socket directory.
func (p *Plugin) ephemeralList() string {
	return filepath.Join(p.host.socketDir, "ephemeral-"+p.Name)
}

// trackEphemeral counts an ephemeral driver of namespace as opened (delta
// 1) or closed (-1), and rewrites the reaper's list. A namespace holding a
// newline cannot be listed, one per line; it is logged instead.
func (p *Plugin) trackEphemeral(namespace string, delta int) {
	if strings.ContainsAny(namespace, "\n") {
		p.logger.Warn("an ephemeral namespace with a newline cannot be cleaned up after a host death", "plugin", p.Name, "namespace", namespace)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ephemeral == nil {
		p.ephemeral = map[string]int{}
	}
	p.ephemeral[namespace] += delta
	if p.ephemeral[namespace] <= 0 {
		delete(p.ephemeral, namespace)
	}
	names := make([]string, 0, len(p.ephemeral))
	for ns := range p.ephemeral {
		names = append(names, ns)
	}
	sort.Strings(names)
	list := p.ephemeralList()
	if len(names) == 0 {
		os.Remove(list)
		return
	}
	tmp := list + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(names, "\n")+"\n"), 0o600); err == nil {
		err = os.Rename(tmp, list)
		if err != nil {
			p.logger.Warn("cannot list ephemeral namespaces for the reaper", "plugin", p.Name, "err", err)
		}
	}
}
