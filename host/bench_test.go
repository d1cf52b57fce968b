package host

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// BenchmarkPluginStartAutoMTLS measures a plugin's start to its first
// answered call with go-plugin's AutoMTLS off (the default: a private unix
// socket) and on, in the same run.
func BenchmarkPluginStartAutoMTLS(b *testing.B) {
	dir := b.TempDir()
	for _, mtls := range []bool{false, true} {
		name := "off"
		if mtls {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			install(b, dir, "bench", 0o755)
			for b.Loop() {
				h, err := New(Config{Dirs: []string{dir}, AutoMTLS: mtls, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				p, _ := h.Plugin("bench")
				if _, err := p.Info(context.Background()); err != nil {
					b.Fatal(err)
				}
				h.Close()
			}
		})
	}
}

// BenchmarkPluginStartReaper measures a plugin's start to its first
// answered call without and with the reaper that kills the plugin's group
// when the host dies, in the same run.
func BenchmarkPluginStartReaper(b *testing.B) {
	dir := b.TempDir()
	install(b, dir, "bench", 0o755)
	for _, reaper := range []bool{false, true} {
		name := "off"
		if reaper {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				h.noReaper = !reaper
				p, _ := h.Plugin("bench")
				if _, err := p.Info(context.Background()); err != nil {
					b.Fatal(err)
				}
				h.Close()
			}
		})
	}
}
