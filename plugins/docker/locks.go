package docker

import "sync"

// taskLocks serialises work per task ID. An entry lives only while a caller
// holds or waits for its lock, so a long-lived driver keeps nothing per
// finished task: the map is bounded by the calls in flight.
type taskLocks struct {
	mu    sync.Mutex
	locks map[string]*taskLock
}

type taskLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; guarded by taskLocks.mu
}

// lock blocks until the caller holds the lock for id and returns the
// function that releases it.
func (t *taskLocks) lock(id string) (unlock func()) {
	t.mu.Lock()
	if t.locks == nil {
		t.locks = map[string]*taskLock{}
	}
	l, ok := t.locks[id]
	if !ok {
		l = &taskLock{}
		t.locks[id] = l
	}
	l.refs++
	t.mu.Unlock()

	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		t.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(t.locks, id)
		}
		t.mu.Unlock()
	}
}

// len is the number of task IDs with a holder or waiter.
func (t *taskLocks) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.locks)
}
