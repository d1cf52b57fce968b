package wire

import "github.com/jtarchie/pocketci/orchestra"

// FinalStatus returns the finished status that c, a container of this
// client layer, has seen and cached. The host asks it before anything else,
// so that a finished task's Status neither crosses the wire nor restarts a
// dead plugin.
func FinalStatus(c orchestra.Container) (orchestra.ContainerStatus, bool) {
	cc := asClientContainer(c)
	if cc == nil {
		return nil, false
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.done == nil {
		return nil, false
	}
	return cc.done, true
}

// CarryFinal gives to, the same task found again in a restarted plugin,
// the finished status from had cached: the cache stays one, across
// re-attaches.
func CarryFinal(from, to orchestra.Container) {
	st, ok := FinalStatus(from)
	dst := asClientContainer(to)
	if !ok || dst == nil {
		return
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.done == nil {
		dst.done = st.(*containerStatus)
	}
}

func asClientContainer(c orchestra.Container) *clientContainer {
	switch c := c.(type) {
	case *clientContainer:
		return c
	case *clientFollowContainer:
		return c.clientContainer
	}
	return nil
}
