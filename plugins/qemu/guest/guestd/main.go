// Command pocketci-guestd is the qemu driver's task daemon inside the
// guest. The driver copies it onto the share, starts it once per boot with
// guest-exec (it is then part of the boot snapshot) and talks to it over
// the virtio-serial port guestproto.PortName: one JSON line per message.
//
// One long-lived process does per task what a shell wrapper would do with
// a dozen busybox execs: the task's cgroup and limits, its overlay root and
// volumes, its user, its pipes, stdin from the share, and, when it exits,
// the kill of everything it left behind; then it reports the exit code at
// once, so the host does not poll. It uses only the standard library.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

func main() {
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("pocketci-guestd: ")
	dev, err := findPort(guestproto.PortName)
	if err != nil {
		log.Fatal(err)
	}
	port, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		log.Fatalf("open %s: %v", dev, err)
	}
	// Task roots are mounted in this namespace and copied into each task's
	// own; private propagation keeps the two apart.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		log.Printf("make / private: %v", err)
	}
	// Tasks of an earlier instance of the daemon are lost to their host
	// (it hears this instance's hello): their slots are emptied.
	slots, _ := filepath.Glob("/sys/fs/cgroup/slot-*/cgroup.kill")
	for _, kill := range slots {
		_ = os.WriteFile(kill, []byte("1"), 0)
	}
	unpriv, err := newUnprivilegedForker()
	if err != nil {
		log.Fatal(err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		log.Fatal(err)
	}
	d := &daemon{port: port, tasks: make(map[uint64]*task), unpriv: unpriv, devNull: devNull}
	// Said once at every start, before any answer: a host that hears it
	// while its tasks run knows they are gone. Before the host connects the
	// write waits (also across a boot snapshot), and a host saying hello
	// skips it as stale.
	d.send(guestproto.Event{Ev: guestproto.EvHello, Proto: guestproto.Version})
	d.serve()
}

// findPort finds the virtio-serial port named name (there is no udev).
func findPort(name string) (string, error) {
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/vport*/name")
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(data)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(n)), nil
			}
		}
		if len(names) > 0 {
			return "", fmt.Errorf("no virtio-serial port named %s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemon reads requests from the port and runs tasks.
type daemon struct {
	port    *os.File
	unpriv  *forker  // forks tasks that are not privileged
	devNull *os.File // the stdin of tasks without one

	sendMu sync.Mutex

	mu    sync.Mutex
	tasks map[uint64]*task // running, by the host's ID

	// mountMu makes mounting a task's root, forking the task into a copy
	// of this namespace and detaching the root here one step, so no other
	// task's namespace holds a copy of it.
	mountMu sync.Mutex

	// sandboxes are the roots kept between tasks, by name (under mountMu).
	sandboxes map[string]*taskRoot

	// slots are the cgroups of task slots, by path (under mu).
	slots map[string]*slot
}

// serve reads requests until the process ends. A port whose host side is
// not connected reads as EOF: it is read again after a pause.
func (d *daemon) serve() {
	r := bufio.NewReaderSize(d.port, 1<<20)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		switch {
		case err == nil:
			d.handle(line)
			line = line[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			if len(line) > guestproto.MaxLine {
				log.Printf("dropping a request over %d bytes", guestproto.MaxLine)
				line = line[:0]
				_, _ = r.ReadSlice('\n') // the rest of it, as far as it fits
			}
		case errors.Is(err, io.EOF):
			// The host is not connected (or went away): a partial line is
			// stale.
			line = line[:0]
			time.Sleep(10 * time.Millisecond)
		default:
			log.Fatalf("read the port: %v", err)
		}
	}
}

func (d *daemon) handle(line []byte) {
	var req guestproto.Request
	if err := json.Unmarshal(line, &req); err != nil {
		log.Printf("skipping a line that is not a request: %v", err)
		return
	}
	switch req.Op {
	case guestproto.OpHello:
		d.send(guestproto.Event{Ev: guestproto.EvHello, Nonce: req.Nonce, Proto: guestproto.Version})
	case guestproto.OpStart:
		if req.Start == nil {
			d.send(guestproto.Event{Ev: guestproto.EvExit, ID: req.ID, Code: 126, Error: "start without a task"})
			return
		}
		t := newTask(req.ID, req.Start)
		d.mu.Lock()
		d.tasks[req.ID] = t
		d.mu.Unlock()
		go func() {
			code, err := t.run(d)
			d.mu.Lock()
			delete(d.tasks, req.ID)
			d.mu.Unlock()
			ev := guestproto.Event{Ev: guestproto.EvExit, ID: req.ID, Code: code}
			if err != nil {
				ev.Error = err.Error()
			}
			d.send(ev)
		}()
	case guestproto.OpKill:
		d.mu.Lock()
		t := d.tasks[req.ID]
		d.mu.Unlock()
		if t != nil {
			t.kill()
		}
	case guestproto.OpDrop:
		d.dropSandbox(req.Sandbox)
	default:
		log.Printf("unknown op %q", req.Op)
	}
}

// send writes one event line. A port without a host blocks the write until
// one connects.
func (d *daemon) send(ev guestproto.Event) {
	data, err := json.Marshal(ev)
	if err != nil {
		log.Printf("encode event: %v", err)
		return
	}
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	if _, err := d.port.Write(append(data, '\n')); err != nil {
		log.Printf("write event: %v", err)
	}
}
