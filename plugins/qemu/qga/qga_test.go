package qga

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAgent is a guest agent on a unix socket. It answers like qemu-ga 7.2,
// including its traps: a 0xFF before sync replies, stale replies queued
// before the one a sync asks for, results collected once.
type fakeAgent struct {
	t        *testing.T
	path     string
	mu       sync.Mutex
	requests []string          // commands received, in order
	procs    map[int]*fakeProc // by pid
	nextPID  int
	stale    int // stale sync replies to send before the real one
	hold     chan struct{}
}

type fakeProc struct {
	req       ExecRequest
	pollsLeft int // exec-status calls answered "running" before exit
	status    ExecStatus
	collected bool
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	a := &fakeAgent{t: t, path: filepath.Join(t.TempDir(), "qga.sock"), procs: map[int]*fakeProc{}, nextPID: 100}
	l, err := net.Listen("unix", a.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go a.serve(conn)
		}
	}()
	return a
}

func (a *fakeAgent) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		line = []byte(strings.TrimLeft(string(line), "\xff"))
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			_, _ = conn.Write([]byte(`{"error":{"class":"GenericError","desc":"JSON parse error"}}` + "\n"))
			continue
		}
		a.mu.Lock()
		a.requests = append(a.requests, req.Execute)
		hold := a.hold
		a.mu.Unlock()
		if hold != nil && req.Execute == "guest-ping" {
			<-hold
		}
		_, _ = conn.Write(a.answer(req.Execute, req.Arguments))
	}
}

func (a *fakeAgent) answer(cmd string, args json.RawMessage) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch cmd {
	case "guest-sync-delimited":
		var in struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(args, &in)
		var out []byte
		for i := range a.stale {
			out = append(out, 0xFF)
			out = append(out, []byte(`{"return": `+json.Number(rune('1'+i)).String()+"}\n")...)
		}
		a.stale = 0
		b, _ := json.Marshal(map[string]int64{"return": in.ID})
		out = append(out, 0xFF)
		return append(append(out, b...), '\n')
	case "guest-ping":
		return []byte(`{"return": {}}` + "\n")
	case "guest-exec":
		var req ExecRequest
		_ = json.Unmarshal(args, &req)
		if req.Path == "/no/such" {
			return []byte(`{"error": {"class": "GenericError", "desc": "Failed to execute child process \u201c/no/such\u201d (No such file or directory)"}}` + "\n")
		}
		a.nextPID++
		p := &fakeProc{req: req, pollsLeft: 2}
		switch {
		case len(req.Args) > 0 && req.Args[0] == "kill":
			p.status = ExecStatus{Exited: true, Signal: ptr(9)}
		default:
			p.status = ExecStatus{Exited: true, ExitCode: ptr(3), OutData: []byte(strings.Join(req.Args, " ")), ErrData: req.InputData}
		}
		a.procs[a.nextPID] = p
		return []byte(`{"return": {"pid": ` + jsonInt(a.nextPID) + "}}\n")
	case "guest-exec-status":
		var in struct {
			PID int `json:"pid"`
		}
		_ = json.Unmarshal(args, &in)
		p, ok := a.procs[in.PID]
		if !ok || p.collected {
			return []byte(`{"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}` + "\n")
		}
		if p.pollsLeft > 0 {
			p.pollsLeft--
			return []byte(`{"return": {"exited": false}}` + "\n")
		}
		p.collected = true
		b, _ := json.Marshal(map[string]ExecStatus{"return": p.status})
		return append(b, '\n')
	}
	return []byte(`{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}` + "\n")
}

func ptr(i int) *int { return &i }

func jsonInt(i int) string { b, _ := json.Marshal(i); return string(b) }

func dial(t *testing.T, a *fakeAgent) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, a.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestSyncSkipsDelimiterAndStaleReplies(t *testing.T) {
	for _, stale := range []int{0, 1, 3} {
		a := newFakeAgent(t)
		a.stale = stale
		c := dial(t, a)
		if err := c.Sync(t.Context()); err != nil {
			t.Fatalf("stale=%d: sync: %v", stale, err)
		}
		// The stream is in step: a ping gets its own reply, not a stale one.
		if err := c.Ping(t.Context()); err != nil {
			t.Fatalf("stale=%d: ping after sync: %v", stale, err)
		}
	}
}

func TestExecAndStatus(t *testing.T) {
	a := newFakeAgent(t)
	c := dial(t, a)
	if err := c.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid, err := c.Exec(t.Context(), ExecRequest{Path: "/bin/sh", Args: []string{"-c", "exit 3"}, Env: []string{"A=b"}, InputData: []byte{0, 0xff, 'x'}, CaptureOutput: true})
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	got := a.procs[pid].req
	a.mu.Unlock()
	if got.Path != "/bin/sh" || strings.Join(got.Args, "|") != "-c|exit 3" || strings.Join(got.Env, "|") != "A=b" || string(got.InputData) != "\x00\xffx" || !got.CaptureOutput {
		t.Fatalf("the agent received %+v", got)
	}
	var st ExecStatus
	polls := 0
	for {
		st, err = c.ExecStatus(t.Context(), pid)
		if err != nil {
			t.Fatal(err)
		}
		polls++
		if st.Exited {
			break
		}
	}
	if polls != 3 {
		t.Errorf("polls = %d, want 3 (two running, one exited)", polls)
	}
	if st.Code() != 3 || string(st.OutData) != "-c exit 3" || string(st.ErrData) != "\x00\xffx" {
		t.Errorf("status = %+v, code %d", st, st.Code())
	}
	// The result can be collected once; a second query is an agent error.
	_, err = c.ExecStatus(t.Context(), pid)
	var qe *Error
	if !errors.As(err, &qe) || !strings.Contains(qe.Desc, "Invalid parameter 'pid'") {
		t.Errorf("second status: err = %v, want the agent's Invalid parameter error", err)
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		st   ExecStatus
		want int
	}{
		{"zero", ExecStatus{Exited: true, ExitCode: ptr(0)}, 0},
		{"exit code", ExecStatus{Exited: true, ExitCode: ptr(7)}, 7},
		{"sigkill", ExecStatus{Exited: true, Signal: ptr(9)}, 137},
		{"sigterm", ExecStatus{Exited: true, Signal: ptr(15)}, 143},
		{"unknown", ExecStatus{Exited: true}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.st.Code(); got != tt.want {
				t.Errorf("Code() = %d, want %d", got, tt.want)
			}
		})
	}
	a := newFakeAgent(t)
	c := dial(t, a)
	pid, err := c.Exec(t.Context(), ExecRequest{Path: "/bin/busybox", Args: []string{"kill"}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := c.ExecStatus(t.Context(), pid)
		if err != nil {
			t.Fatal(err)
		}
		if st.Exited {
			if st.Code() != 137 {
				t.Fatalf("signal status code = %d, want 137", st.Code())
			}
			break
		}
	}
}

func TestAgentErrors(t *testing.T) {
	a := newFakeAgent(t)
	c := dial(t, a)
	_, err := c.Exec(t.Context(), ExecRequest{Path: "/no/such"})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !strings.Contains(err.Error(), "/no/such") {
		t.Fatalf("err = %v, want a GenericError naming /no/such", err)
	}
	if err := c.Do(t.Context(), "guest-nonsense", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("err = %v, want CommandNotFound", err)
	}
	// The client still works after error replies.
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptedRequestResyncs(t *testing.T) {
	a := newFakeAgent(t)
	c := dial(t, a)
	if err := c.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	a.mu.Lock()
	a.hold = hold
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping with a held reply: err = %v, want deadline exceeded", err)
	}
	a.mu.Lock()
	a.hold = nil
	a.mu.Unlock()
	close(hold) // the late ping reply is now queued: a stale reply
	pid, err := c.Exec(t.Context(), ExecRequest{Path: "/bin/true"})
	if err != nil {
		t.Fatalf("exec after an interrupted request: %v", err)
	}
	if pid == 0 {
		t.Fatal("exec after resync read the stale ping reply instead of its own")
	}
	a.mu.Lock()
	reqs := strings.Join(a.requests, ",")
	a.mu.Unlock()
	if !strings.Contains(reqs, "guest-ping,guest-sync-delimited,guest-exec") {
		t.Errorf("requests = %s, want a resync between the interrupted ping and the exec", reqs)
	}
}

func TestConcurrentRequestsAreSerialized(t *testing.T) {
	a := newFakeAgent(t)
	c := dial(t, a)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Go(func() {
			pid, err := c.Exec(t.Context(), ExecRequest{Path: "/bin/echo", Args: []string{"x"}})
			if err != nil {
				errs <- err
				return
			}
			for {
				st, err := c.ExecStatus(t.Context(), pid)
				if err != nil {
					errs <- err
					return
				}
				if st.Exited {
					if st.Code() != 3 || string(st.OutData) != "x" {
						errs <- errors.New("wrong result for a concurrent exec")
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
