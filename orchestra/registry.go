package orchestra

import (
	"log/slog"
	"sort"
	"sync"
)

// InitFunc creates a driver instance for a namespace.
type InitFunc func(namespace string, logger *slog.Logger) (Driver, error)

var registry = struct {
	sync.RWMutex
	drivers map[string]InitFunc
}{drivers: map[string]InitFunc{}}

// Add registers init under name, replacing an earlier registration of the
// same name. Drivers call it from an init function; the plugin host calls it
// for every plugin it discovers.
func Add(name string, init InitFunc) {
	registry.Lock()
	defer registry.Unlock()
	registry.drivers[name] = init
}

// Get returns the InitFunc registered under name.
func Get(name string) (InitFunc, bool) {
	registry.RLock()
	defer registry.RUnlock()
	init, ok := registry.drivers[name]
	return init, ok
}

// Names returns the registered driver names, sorted.
func Names() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.drivers))
	for name := range registry.drivers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
