package docker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTaskLocksBounded checks that the per-task locks serialise callers of
// one ID and that no entry outlives its last holder.
func TestTaskLocksBounded(t *testing.T) {
	var locks taskLocks
	var wg sync.WaitGroup
	for i := range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := locks.lock(fmt.Sprintf("task-%d", i))
			unlock()
		}()
	}
	wg.Wait()
	if n := locks.len(); n != 0 {
		t.Fatalf("after 2000 finished tasks %d lock entries remain, want 0", n)
	}

	var inside, maxInside atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := locks.lock("same")
			defer unlock()
			n := inside.Add(1)
			if n > maxInside.Load() {
				maxInside.Store(n)
			}
			inside.Add(-1)
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d callers held the lock of one task at once, want 1", maxInside.Load())
	}
	if n := locks.len(); n != 0 {
		t.Fatalf("after contention %d lock entries remain, want 0", n)
	}
}
