//go:build linux && race

package shim

// raceEnabled reports a -race build, whose shim would otherwise sleep 1 s
// at exit (the race runtime's atexit_sleep_ms).
const raceEnabled = true
