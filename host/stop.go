package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/jtarchie/pocketci/orchestra"
)

// stop closes every driver opened through the plugin, then stops the
// process. A plugin whose Close calls have not all returned within the
// host's close timeout is killed all the same.
func (p *Plugin) stop() error {
	// Drivers kept open across a host restart that nobody claimed are
	// closed like the others.
	p.mu.Lock()
	var unclaimed []string
	for ns := range p.adopted {
		unclaimed = append(unclaimed, ns)
	}
	p.mu.Unlock()
	for _, ns := range unclaimed {
		if od, ok := p.adopt(ns); ok && p.rpc != nil {
			p.newDriver(ns, p.rpc.Adopt(od), OpenOptions{})
		}
	}
	p.mu.Lock()
	drivers := make([]*driver, 0, len(p.drivers))
	if p.running() {
		for d := range p.drivers {
			drivers = append(drivers, d)
		}
	}
	p.mu.Unlock()

	errc := make(chan error, len(drivers))
	for _, d := range drivers {
		go func() { errc <- d.close(hostClosing(context.Background())) }()
	}
	var errs []error
	timeout := time.After(p.host.closeTimeout)
	for range drivers {
		select {
		case err := <-errc:
			if err != nil {
				errs = append(errs, err)
			}
			if errors.Is(err, errCloseTimeout) {
				errs = append(errs, fmt.Errorf("plugin %s: closing its drivers took longer than %s: killing it", p.Name, p.host.closeTimeout))
				goto kill
			}
		case <-timeout:
			errs = append(errs, fmt.Errorf("plugin %s: closing its drivers took longer than %s: killing it", p.Name, p.host.closeTimeout))
			goto kill
		}
	}
kill:
	p.mu.Lock()
	clear(p.drivers)
	client, proc, byHand := p.client, p.proc, p.byHand
	p.stopping.Store(true)
	p.final = true
	p.client, p.proc, p.byHand = nil, nil, nil
	p.mu.Unlock()
	if byHand != nil {
		// A plugin run by hand is not the host's to stop: only disconnect.
		byHand.Close()
	} else if client != nil {
		if err := killClient(client, proc, p.host.shutdownTimeout); err != nil {
			errs = append(errs, fmt.Errorf("plugin %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// kill kills the plugin's process group at once, without closing its
// drivers: the host's last resort (a second Ctrl-C).
func (p *Plugin) kill() {
	p.mu.Lock()
	proc, pid, reattached := p.proc, p.pid, p.client != nil && p.proc == nil && p.byHand == nil
	p.stopping.Store(true)
	p.final = true
	p.mu.Unlock()
	switch {
	case proc != nil:
		proc.killLeavingReaper()
	case reattached && pid > 0:
		killReattached(pid)
	}
}

// connect waits for go-plugin to connect to the plugin, or for ctx to end:
// then the plugin is killed with its group, which ends go-plugin's wait.
func connect(ctx context.Context, client *plugin.Client, proc func() *pluginRunner) (plugin.ClientProtocol, error) {
	type result struct {
		proto plugin.ClientProtocol
		err   error
	}
	done := make(chan result, 1)
	go func() {
		proto, err := client.Client()
		done <- result{proto, err}
	}()
	select {
	case r := <-done:
		return r.proto, r.err
	case <-ctx.Done():
		if r := proc(); r != nil {
			_ = r.Kill(context.Background())
		}
		r := <-done
		if r.err == nil {
			r.err = ctx.Err()
		}
		return r.proto, r.err
	}
}

// killClient stops a plugin through go-plugin, which first asks it to shut
// down over gRPC with no deadline of its own: after timeout the plugin's
// process group is killed, which ends that call. The wait for go-plugin to
// finish is bounded too.
func killClient(client *plugin.Client, proc *pluginRunner, timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		client.Kill()
		close(done)
	}()
	select {
	case <-done:
		if proc != nil {
			proc.disarm()
		}
		return nil
	case <-time.After(timeout):
	}
	if proc != nil {
		_ = proc.Kill(context.Background())
	} else if rc := client.ReattachConfig(); rc != nil && rc.Pid > 0 {
		killReattached(rc.Pid)
	}
	select {
	case <-done:
		if proc != nil {
			proc.disarm()
		}
		return fmt.Errorf("did not shut down within %s: killed its process group", timeout)
	case <-time.After(timeout):
		return fmt.Errorf("did not shut down within %s, and is still not gone %s after SIGKILL", timeout, timeout)
	}
}

// diedDuring reports whether a call to the process of generation gen that
// failed with err failed because that process died: then the call may be
// made again in a restarted process. A connection that broke is seen
// before the exit of the process behind it, so this waits a little for it.
func (p *Plugin) diedDuring(gen uint64, err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, errCloseTimeout) || errors.Is(err, orchestra.ErrClosed) {
		return false
	}
	p.mu.Lock()
	proc, same := p.proc, p.gen == gen
	p.mu.Unlock()
	if !same {
		return true
	}
	if proc == nil {
		return !p.alive(gen)
	}
	select {
	case <-proc.exitedCh():
		return true
	case <-time.After(exitGrace):
		return false
	}
}

// exitGrace is how long a failed call waits to see whether the plugin's
// process is exiting.
const exitGrace = 250 * time.Millisecond
