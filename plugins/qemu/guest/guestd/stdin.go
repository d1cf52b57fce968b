package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// feedStdin copies the host's stdin chunks (stdin.0, stdin.1, ..., each
// renamed into place when complete; stdin.end after the last) in order
// into w, the task's stdin pipe, deleting each, which tells the host it may
// write more. It ends at stdin.end, when the task stops reading, or at stop
// (the task ended). A failed host stream never gets its stdin.end: the host
// kills the task instead, so the task never takes part of its input for all
// of it.
func feedStdin(dir string, w *os.File, stop <-chan struct{}) {
	defer w.Close()
	pause := 500 * time.Microsecond
	// Large reads: each is a 9p round trip (msize 512000); the plain
	// writer keeps io.Copy from splicing in small pieces.
	buf := make([]byte, 512000)
	dst := struct{ io.Writer }{w}
	for i := 0; ; {
		chunk := filepath.Join(dir, "stdin."+strconv.Itoa(i))
		if f, err := os.Open(chunk); err == nil {
			_, err = io.CopyBuffer(dst, f, buf)
			f.Close()
			if err != nil {
				return // the task stopped reading
			}
			_ = os.Remove(chunk)
			i++
			pause = 500 * time.Microsecond
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "stdin.end")); err == nil {
			if _, err := os.Stat(chunk); errors.Is(err, os.ErrNotExist) {
				return
			}
			continue // the last chunk was published just before the end
		}
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
}
