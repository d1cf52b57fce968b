package docker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/docker/docker/client"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// TestInstancesWithDifferentConfigs opens three driver instances in one
// process: one with the default config, one whose host is a second unix
// socket (a proxy to the same engine), one whose host is the default
// address spelled out. They run tasks at the same time, each through its
// own address: the proxy sees the second instance's requests and only
// those.
func TestInstancesWithDifferentConfigs(t *testing.T) {
	proxy := startEngineProxy(t, false)
	// The default address, spelled out (DOCKER_HOST's when set).
	explicit := client.DefaultDockerHost
	if cli, err := client.NewClientWithOpts(client.FromEnv); err == nil {
		explicit = cli.DaemonHost()
		cli.Close()
	}
	configs := []Config{{}, {Host: proxy.host}, {Host: explicit}}
	drivers := make([]*Driver, len(configs))
	for i, cfg := range configs {
		drivers[i], _ = newTestDriverWith(t, fmt.Sprintf("cfg%d", i), cfg)
	}
	if got := drivers[1].client.DaemonHost(); got != proxy.host {
		t.Fatalf("second instance talks to %q, want the proxy %q", got, proxy.host)
	}
	ctx := testContext(t)

	// Warm up the default and explicit instances (connect), then check
	// that their work does not go through the proxy.
	before := proxy.requests.Load()
	runEach(ctx, t, drivers, []int{0, 2})
	if after := proxy.requests.Load(); after != before {
		t.Fatalf("the default and explicit instances sent %d requests through the proxy", after-before)
	}
	// All three at once.
	runEach(ctx, t, drivers, []int{0, 1, 2})
	if proxy.requests.Load() == before {
		t.Fatal("the proxied instance sent nothing through the proxy")
	}
}

// runEach runs a task in each selected driver at the same time and checks
// its output.
func runEach(ctx context.Context, t *testing.T, drivers []*Driver, which []int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(which))
	for _, i := range which {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("task-%d-%d", i, len(which))
			c, err := drivers[i].RunContainer(ctx, orchestra.Task{ID: id, Image: testImage,
				Command: []string{"sh", "-c", "echo from-$0", fmt.Sprint(i)}})
			if err != nil {
				errs <- fmt.Errorf("instance %d: RunContainer: %w", i, err)
				return
			}
			r, err := testkit.ResultOf(ctx, c)
			if err != nil {
				errs <- fmt.Errorf("instance %d: %w", i, err)
				return
			}
			if want := fmt.Sprintf("from-%d\n", i); r.ExitCode != 0 || string(r.Stdout) != want {
				errs <- fmt.Errorf("instance %d: exit %d stdout %q, want 0 and %q", i, r.ExitCode, string(r.Stdout), want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
