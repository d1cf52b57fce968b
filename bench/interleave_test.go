package bench

import (
	"testing"
	"time"
)

// step is one measured run; it returns what to undo afterwards, untimed (or
// nil).
type step struct {
	name string
	run  func() (undo func(), err error)
}

// interleave runs the steps one after the other in every iteration, in an
// order that rotates each iteration, so that a machine whose load drifts
// (other work on its two cores) weighs on every step alike. It reports each
// step's mean as <name>-ns/op, and <name>-MB/s when bytes > 0.
func interleave(b *testing.B, bytes int64, steps ...step) {
	b.Helper()
	total := make([]time.Duration, len(steps))
	n := 0
	for b.Loop() {
		for k := range steps {
			i := (k + n) % len(steps)
			start := time.Now()
			undo, err := steps[i].run()
			total[i] += time.Since(start)
			if err != nil {
				b.Fatalf("%s: %v", steps[i].name, err)
			}
			if undo != nil {
				undo()
			}
		}
		n++
	}
	for i, s := range steps {
		ns := float64(total[i].Nanoseconds()) / float64(n)
		b.ReportMetric(ns, s.name+"-ns/op")
		if bytes > 0 {
			b.ReportMetric(float64(bytes)/ns*1e3, s.name+"-MB/s")
		}
	}
}
