package orchestra

import (
	"fmt"
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

// Add registers init under name. Drivers call it from an init function.
//
// A name registered twice is a programming error (two packages claim the
// same driver name, or one is linked twice): Add refuses it by panicking
// with a message naming the driver, as database/sql.Register does, so the
// program fails at start instead of silently running the wrong driver. An
// empty name or a nil init panics too. A caller that means to replace a
// registration, such as the plugin host putting a discovered plugin in the
// place of the same driver compiled in, calls Replace.
func Add(name string, init InitFunc) {
	checkEntry("Add", name, init)
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.drivers[name]; dup {
		panic(fmt.Sprintf("orchestra: Add called twice for driver %q (use Replace to replace a registration on purpose)", name))
	}
	registry.drivers[name] = init
}

// Replace registers init under name whether or not name is registered, and
// reports whether it replaced an earlier registration. The plugin host uses
// it so that a plugin it discovered takes the place of the same driver
// compiled into the program. An empty name or a nil init panics.
func Replace(name string, init InitFunc) (replaced bool) {
	checkEntry("Replace", name, init)
	registry.Lock()
	defer registry.Unlock()
	_, replaced = registry.drivers[name]
	registry.drivers[name] = init
	return replaced
}

func checkEntry(fn, name string, init InitFunc) {
	switch {
	case name == "":
		panic("orchestra: " + fn + " called with an empty driver name")
	case init == nil:
		panic(fmt.Sprintf("orchestra: %s called with a nil InitFunc for driver %q", fn, name))
	}
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

// Each calls fn for every registered driver, in name order. It works on a
// snapshot taken when it is called, so fn may call Add, Replace or Get.
func Each(fn func(name string, init InitFunc)) {
	registry.RLock()
	names := make([]string, 0, len(registry.drivers))
	for name := range registry.drivers {
		names = append(names, name)
	}
	inits := make(map[string]InitFunc, len(names))
	for _, name := range names {
		inits[name] = registry.drivers[name]
	}
	registry.RUnlock()
	sort.Strings(names)
	for _, name := range names {
		fn(name, inits[name])
	}
}
