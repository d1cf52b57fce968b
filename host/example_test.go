package host_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// Find the plugins in the usual directories, register them, and run a task
// through one as if its driver were compiled in.
func ExampleNew() {
	h, err := host.New(host.Config{Dirs: host.Dirs(nil), Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	h.Register()

	init, ok := orchestra.Get("native")
	if !ok {
		fmt.Println("no native plugin installed")
		return
	}
	driver, err := init("example", slog.Default())
	if err != nil {
		panic(err)
	}
	defer driver.Close()
	c, err := driver.RunContainer(context.Background(), orchestra.Task{ID: "hello", Command: []string{"echo", "hello"}})
	if err != nil {
		panic(err)
	}
	_ = c // poll c.Status until IsDone, then c.Logs(ctx, os.Stdout, os.Stderr)
}
