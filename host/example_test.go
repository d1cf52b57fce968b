package host_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// Find the plugins in the usual directories, put them in a driver registry,
// and run a task through one as if its driver were compiled in.
func ExampleNew() {
	h, err := host.New(host.Config{Dirs: host.Dirs(nil), Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	registry := h.Registry() // pass the compiled-in providers here; a plugin takes the place of one of its name

	ctx := context.Background()
	if _, ok := registry.Provider("native"); !ok {
		fmt.Println("no native plugin installed")
		return
	}
	// A nil config is the driver's defaults; registry.UnmarshalConfig has
	// the plugin check a JSON one first.
	driver, err := registry.CreateDriver(ctx, "native", "example", nil, slog.Default())
	if err != nil {
		panic(err)
	}
	defer driver.Close()
	c, err := driver.RunContainer(ctx, orchestra.Task{ID: "hello", Command: []string{"echo", "hello"}})
	if err != nil {
		panic(err)
	}
	_ = c // c.Logs(ctx, os.Stdout, os.Stderr, true) streams its output until it exits
}
