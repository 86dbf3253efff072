package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The tests below run in synctest bubbles: synctest.Test fails if any
// goroutine started by the Monitor is still blocked when the test ends, so
// every test doubles as a goroutine-leak check.

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`

// peer is the scripted QEMU side of a net.Pipe.
type peer struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

type peerRequest struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func newPeer(t *testing.T, conn net.Conn) *peer {
	return &peer{t: t, conn: conn, dec: json.NewDecoder(conn)}
}

func (p *peer) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.conn, line+"\n"); err != nil {
		p.t.Fatalf("peer send: %v", err)
	}
}

func (p *peer) recv() peerRequest {
	p.t.Helper()
	var r peerRequest
	if err := p.dec.Decode(&r); err != nil {
		p.t.Fatalf("peer recv: %v", err)
	}
	return r
}

// reply answers r with a raw JSON return value.
func (p *peer) reply(r peerRequest, ret string) {
	p.t.Helper()
	p.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, r.ID))
}

type result struct {
	ret json.RawMessage
	err error
}

// execute runs Execute in a goroutine so the test goroutine can play the peer.
func execute(ctx context.Context, m *Monitor, command string, args any) <-chan result {
	ch := make(chan result, 1)
	go func() {
		ret, err := m.Execute(ctx, command, args)
		ch <- result{ret, err}
	}()
	return ch
}

// connect returns a negotiated Monitor and the peer scripting QEMU.
func connect(t *testing.T) (*Monitor, *peer) {
	t.Helper()
	client, server := net.Pipe()
	p := newPeer(t, server)
	type made struct {
		m   *Monitor
		err error
	}
	ch := make(chan made, 1)
	go func() {
		m, err := New(t.Context(), client)
		ch <- made{m, err}
	}()
	p.send(greeting)
	r := p.recv()
	if r.Execute != "qmp_capabilities" {
		t.Fatalf("first command = %q, want qmp_capabilities", r.Execute)
	}
	p.reply(r, "{}")
	got := <-ch
	if got.err != nil {
		t.Fatalf("New: %v", got.err)
	}
	t.Cleanup(func() {
		got.m.Close()
		server.Close()
	})
	return got.m, p
}

func TestExecuteReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "query-status", nil)
		r := p.recv()
		if r.Execute != "query-status" || r.Arguments != nil {
			t.Fatalf("peer got %+v, want query-status without arguments", r)
		}
		p.reply(r, `{"status": "prelaunch", "singlestep": false, "running": false}`)
		got := <-res
		if got.err != nil {
			t.Fatal(got.err)
		}
		var st struct{ Status string }
		if err := json.Unmarshal(got.ret, &st); err != nil || st.Status != "prelaunch" {
			t.Fatalf("return = %s (%v)", got.ret, err)
		}
	})
}

func TestStatusAndHumanCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		status := make(chan string, 1)
		go func() {
			s, err := m.Status(t.Context())
			if err != nil {
				s = err.Error()
			}
			status <- s
		}()
		p.reply(p.recv(), `{"status": "running", "running": true}`)
		if s := <-status; s != "running" {
			t.Fatalf("Status = %q", s)
		}

		// HMP errors come back as ordinary output: it must be returned as is.
		text := make(chan string, 1)
		go func() {
			s, err := m.HumanCommand(t.Context(), "bogus")
			if err != nil {
				s = err.Error()
			}
			text <- s
		}()
		r := p.recv()
		if r.Execute != "human-monitor-command" || string(r.Arguments) != `{"command-line":"bogus"}` {
			t.Fatalf("peer got %s %s", r.Execute, r.Arguments)
		}
		p.reply(r, `"unknown command: 'bogus'\r\n"`)
		if s := <-text; s != "unknown command: 'bogus'\r\n" {
			t.Fatalf("HumanCommand = %q", s)
		}
	})
}

func TestLargeReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		text := make(chan string, 1)
		go func() {
			s, _ := m.HumanCommand(t.Context(), "info mtree")
			text <- s
		}()
		big := strings.Repeat("x", 4<<20)
		p.reply(p.recv(), `"`+big+`"`)
		if s := <-text; s != big {
			t.Fatalf("got %d bytes, want %d", len(s), len(big))
		}
	})
}

func TestErrorReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "bogus", nil)
		r := p.recv()
		p.send(fmt.Sprintf(`{"id": %s, "error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}}`, r.ID))
		got := <-res
		var qerr *Error
		if !errors.As(got.err, &qerr) || qerr.Class != "CommandNotFound" {
			t.Fatalf("err = %v, want *Error CommandNotFound", got.err)
		}
		if got.ret != nil {
			t.Fatalf("ret = %s alongside an error", got.ret)
		}
	})
}

func TestEventsInterleaved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "cont", nil)
		r := p.recv()
		// QEMU sends RESUME before cont's reply.
		p.send(`{"timestamp": {"seconds": 1700000000, "microseconds": 250}, "event": "RESUME"}`)
		p.reply(r, "{}")
		p.send(`{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}`)
		if got := <-res; got.err != nil || string(got.ret) != "{}" {
			t.Fatalf("cont = %s, %v", got.ret, got.err)
		}
		ev := <-m.Events()
		if ev.Name != "RESUME" || !ev.Timestamp.Equal(time.Unix(1700000000, 250000)) || ev.Data != nil {
			t.Fatalf("first event = %+v", ev)
		}
		ev = <-m.Events()
		if ev.Name != "RESET" || !strings.Contains(string(ev.Data), "host-qmp-system-reset") {
			t.Fatalf("second event = %+v", ev)
		}
	})
}

func TestSlowConsumerLosesOldestEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		const extra = 5
		for i := range eventBuffer + extra {
			p.send(fmt.Sprintf(`{"event": "E%d", "timestamp": {"seconds": 0, "microseconds": 0}}`, i))
		}
		// A reply after the events proves the reader went past all of them.
		res := execute(t.Context(), m, "query-status", nil)
		p.reply(p.recv(), "{}")
		<-res
		if n := len(m.Events()); n != eventBuffer {
			t.Fatalf("%d events buffered, want %d", n, eventBuffer)
		}
		if ev := <-m.Events(); ev.Name != fmt.Sprintf("E%d", extra) {
			t.Fatalf("oldest kept event = %s, want E%d", ev.Name, extra)
		}
	})
}

func TestConcurrentExecutesOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		commands := []string{"a", "b", "c", "d"}
		results := make(map[string]<-chan result)
		for _, c := range commands {
			results[c] = execute(t.Context(), m, c, nil)
		}
		var reqs []peerRequest
		for range commands {
			reqs = append(reqs, p.recv())
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			p.reply(reqs[i], `"`+reqs[i].Execute+`"`)
		}
		for _, c := range commands {
			got := <-results[c]
			if got.err != nil || string(got.ret) != `"`+c+`"` {
				t.Errorf("%s got %s, %v", c, got.ret, got.err)
			}
		}
	})
}

func TestCancelWhileWaitingForReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		ctx, cancel := context.WithCancel(t.Context())
		res := execute(ctx, m, "slow", nil)
		r := p.recv()
		cancel()
		if got := <-res; !errors.Is(got.err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", got.err)
		}
		// The late reply must be dropped, and the session stays usable.
		p.reply(r, `"late"`)
		res = execute(t.Context(), m, "next", nil)
		p.reply(p.recv(), `"next"`)
		if got := <-res; got.err != nil || string(got.ret) != `"next"` {
			t.Fatalf("next = %s, %v", got.ret, got.err)
		}
	})
}

func TestCancelWhileSending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		ctx, cancel := context.WithCancel(t.Context())
		res := execute(ctx, m, "stuck", nil)
		synctest.Wait() // blocked writing: the peer does not read
		cancel()
		if got := <-res; !errors.Is(got.err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", got.err)
		}
		// Nothing reached the wire, so the session is still usable.
		res = execute(t.Context(), m, "next", nil)
		r := p.recv()
		if r.Execute != "next" {
			t.Fatalf("peer got %q, want next", r.Execute)
		}
		p.reply(r, "{}")
		if got := <-res; got.err != nil {
			t.Fatal(got.err)
		}
	})
}

func TestPeerHangsUpMidRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "quit", nil)
		p.recv()
		p.conn.Close()
		if got := <-res; !errors.Is(got.err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", got.err)
		}
		<-m.Done()
		if err := m.Err(); err != io.EOF {
			t.Fatalf("Err = %v, want io.EOF", err)
		}
		if _, ok := <-m.Events(); ok {
			t.Fatal("Events not closed")
		}
		if _, err := m.Execute(t.Context(), "after", nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Execute after hang-up: %v, want ErrClosed", err)
		}
	})
}

func TestGarbageEndsSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "query-status", nil)
		p.recv()
		p.send("this is not JSON")
		<-m.Done()
		var syntax *json.SyntaxError
		if err := m.Err(); !errors.As(err, &syntax) {
			t.Fatalf("Err = %v, want a JSON syntax error", err)
		}
		if got := <-res; !errors.Is(got.err, ErrClosed) {
			t.Fatalf("pending Execute: %v, want ErrClosed", got.err)
		}
	})
}

func TestCloseFailsPendingAndStopsReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		res := execute(t.Context(), m, "query-status", nil)
		p.recv()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if got := <-res; !errors.Is(got.err, ErrClosed) {
			t.Fatalf("pending Execute: %v, want ErrClosed", got.err)
		}
		if err := m.Err(); err != ErrClosed {
			t.Fatalf("Err = %v, want ErrClosed", err)
		}
		synctest.Wait() // every goroutine left is blocked or gone
		buf := make([]byte, 1<<20)
		if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "(*Monitor).read(") {
			t.Fatalf("reader goroutine still running after Close:\n%s", stacks)
		}
	})
}

func TestGreetingWithoutQMP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		defer server.Close()
		errc := make(chan error, 1)
		go func() {
			_, err := New(t.Context(), client)
			errc <- err
		}()
		newPeer(t, server).send(`{"hello": "world"}`)
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "QMP") {
			t.Fatalf("New = %v, want a missing-QMP error", err)
		}
		if _, err := client.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("conn not closed after failed New: %v", err)
		}
	})
}

func TestCapabilitiesRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		defer server.Close()
		errc := make(chan error, 1)
		go func() {
			_, err := New(t.Context(), client)
			errc <- err
		}()
		p := newPeer(t, server)
		p.send(greeting)
		r := p.recv()
		p.send(fmt.Sprintf(`{"id": %s, "error": {"class": "CommandNotFound", "desc": "no"}}`, r.ID))
		var qerr *Error
		if err := <-errc; !errors.As(err, &qerr) {
			t.Fatalf("New = %v, want *Error", err)
		}
	})
}

func TestNewHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		defer server.Close()
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := New(ctx, client)
			errc <- err
		}()
		synctest.Wait() // waiting for a greeting that never comes
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("New = %v, want context.Canceled", err)
		}
	})
}

// TestDialWaitsForSocket uses a real unix socket (so no bubble) that is
// created only after Dial has started.
func TestDialWaitsForSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "q.sock")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type made struct {
		m   *Monitor
		err error
	}
	ch := make(chan made, 1)
	go func() {
		m, err := Dial(ctx, "unix", path)
		ch <- made{m, err}
	}()

	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := newPeer(t, conn)
	p.send(greeting)
	p.reply(p.recv(), "{}")
	got := <-ch
	if got.err != nil {
		t.Fatalf("Dial: %v", got.err)
	}
	if err := got.m.Close(); err != nil {
		t.Fatal(err)
	}
}

// Not in a bubble: the dialer's deadline would be fake time, checked against
// the real clock.
func TestDialGivesUpWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, "unix", "/nonexistent/qmp/q.sock")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Dial = %v, want deadline exceeded mentioning the last attempt", err)
	}
}

// Send does not wait for replies: two commands reach the peer before either
// is answered, and each Wait gets its own reply whatever the order.
func TestSendPipelines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := connect(t)
		got := make(chan []string, 1)
		go func() {
			var out []string
			a, err := m.Send(t.Context(), "stop", nil)
			if err != nil {
				got <- []string{err.Error()}
				return
			}
			b, err := m.Send(t.Context(), "query-status", nil)
			if err != nil {
				got <- []string{err.Error()}
				return
			}
			for _, c := range []*Call{a, b} {
				ret, err := c.Wait(t.Context())
				out = append(out, fmt.Sprintf("%s %v", ret, err))
			}
			got <- out
		}()
		first, second := p.recv(), p.recv()
		if first.Execute != "stop" || second.Execute != "query-status" {
			t.Fatalf("peer got %q then %q", first.Execute, second.Execute)
		}
		p.reply(second, `{"status": "paused"}`)
		p.reply(first, `{}`)
		out := <-got
		if len(out) != 2 || out[0] != "{} <nil>" || out[1] != `{"status": "paused"} <nil>` {
			t.Fatalf("replies: %q", out)
		}
	})
}
