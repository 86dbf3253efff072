package gdb_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
)

// logBuffer collects the audit log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// endpoint puts an Endpoint with a TCP listener in front of m.
func endpoint(t *testing.T, m *gdbtest.Machine) (*gdb.Endpoint, string, *logBuffer) {
	logs := &logBuffer{}
	e := gdb.New(slog.New(slog.NewTextHandler(logs, nil)))
	e.SetStub(m.Stub)
	addr, err := e.ListenTCP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, addr.String(), logs
}

// waitDetached waits until the endpoint has freed its one-debugger slot.
func waitDetached(t *testing.T, e *gdb.Endpoint) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := e.Attached(); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the endpoint still reports a debugger attached")
		}
	}
}

// endpointGoroutines lists goroutines running the endpoint's code.
func endpointGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "runner/gdb.(*Endpoint)") || strings.Contains(g, "runner/gdb.splice") {
			left = append(left, g)
		}
	}
	return left
}

func TestDebugOverTCP(t *testing.T) {
	m := gdbtest.Start(t)
	e, addr, logs := endpoint(t, m)
	gdbtest.Debug(t, m, addr)
	waitDetached(t, e)
	for _, want := range []string{"gdb attached", "who=\"tcp 127.0.0.1:", "gdb detached", "ended_by=debugger"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("audit log lacks %q:\n%s", want, logs)
		}
	}
}

func TestSecondDebuggerRefused(t *testing.T) {
	m := gdbtest.Start(t)
	e, addr, _ := endpoint(t, m)

	// A client that connects and never speaks holds nothing.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	first, err := gdbtest.Handshake(c)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	who, ok := e.Attached()
	if !ok || who.Who != "tcp "+c.LocalAddr().String() {
		t.Fatalf("attached = %+v, %v; want the first client", who, ok)
	}

	out, err := gdbtest.GDB(context.Background(), t, addr, "info registers pc")
	t.Logf("second gdb:\n%s", out)
	for _, want := range []string{
		"Remote failure reply: E.machineserver: another debugger is attached to this session (tcp " + c.LocalAddr().String(),
		"only one debugger at a time, detach the other first",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("second gdb (err %v) does not show %q:\n%s", err, want, out)
		}
	}

	// The first keeps working, and its detach resumes the VM.
	if err := first.ReadMem(0x20000000, 4096); err != nil {
		t.Fatalf("first debugger after the refusal: %v", err)
	}
	if r, err := first.Do("D;1"); err != nil || r != "OK" {
		t.Fatalf("detach: %q, %v", r, err)
	}
	if st := m.Status(t); st != "running" {
		t.Fatalf("after detach: %s", st)
	}
}

func TestCloseWhileAttached(t *testing.T) {
	m := gdbtest.Start(t)
	e, addr, _ := endpoint(t, m)
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		// continue never returns by itself: the firmware runs forever.
		out, err := gdbtest.GDB(context.Background(), t, addr, "continue")
		done <- result{out, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := e.Attached(); ok && m.Status(t) == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gdb never attached and continued")
		}
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if left := endpointGoroutines(); len(left) > 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
	}
	r := <-done
	if r.err == nil || !strings.Contains(r.out, "Remote connection closed") {
		t.Fatalf("gdb did not see the link close (err %v):\n%s", r.err, r.out)
	}
	if n, err := silent.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("silent client still connected: %d, %v", n, err)
	}
	if st := m.Status(t); st != "running" {
		t.Fatalf("emulator after Close: %s", st)
	}

	// Nothing is served any more.
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still open after Close")
	}
	a, b := net.Pipe()
	defer b.Close()
	if err := e.ServeConn(context.Background(), a, "late"); !errors.Is(err, gdb.ErrClosed) {
		t.Errorf("ServeConn after Close: %v", err)
	}
	if _, err := e.ListenTCP("127.0.0.1:0", nil); !errors.Is(err, gdb.ErrClosed) {
		t.Errorf("ListenTCP after Close: %v", err)
	}
}

func TestKillEndsLink(t *testing.T) {
	m := gdbtest.Start(t)
	e, addr, logs := endpoint(t, m)
	out, err := gdbtest.GDB(context.Background(), t, addr, "kill")
	if err != nil || !strings.Contains(out, "[Inferior 1 (process 1) killed]") {
		t.Fatalf("gdb kill (err %v):\n%s", err, out)
	}
	<-m.Done()
	t.Logf("after gdb kill: %s", m.ExitReason())
	waitDetached(t, e)
	if !strings.Contains(logs.String(), "gdb detached") {
		t.Fatalf("no detach in the audit log:\n%s", logs)
	}
	// The emulator is gone: the next debugger is told so.
	out, _ = gdbtest.GDB(context.Background(), t, addr, "info registers pc")
	if !strings.Contains(out, "E.machineserver: the session's emulator is not running: its gdb stub does not answer") {
		t.Fatalf("debugger after kill:\n%s", out)
	}
}

func TestBadInput(t *testing.T) {
	m := gdbtest.Start(t)
	m.Cont(t)
	e, addr, _ := endpoint(t, m)

	t.Run("garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		rnd := rand.New(rand.NewPCG(1, 2))
		junk := make([]byte, 64<<10)
		for i := range junk {
			junk[i] = byte(rnd.UintN(256))
		}
		junk = append(junk, "$qSupported#00$m0,4#ff+-\x03$"...)         // bad checksums
		junk = append(junk, '$')                                        // and an endless packet
		junk = append(junk, bytes.Repeat([]byte("A"), 20<<10)...)       //
		junk = append(junk, "#41 GET / HTTP/1.1\r\nHost: x\r\n\r\n"...) //
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
		// The endpoint closes its side once it has read everything.
		c.(*net.TCPConn).CloseWrite()
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("endpoint answered garbage: %d, %v", n, err)
		}
		c.Close()
		// QEMU never saw any of it: it answers and keeps running.
		if st := m.Status(t); st != "running" {
			t.Fatalf("after garbage: %s", st)
		}
		if _, ok := e.Attached(); ok {
			t.Fatal("garbage attached a debugger")
		}
	})

	t.Run("machine off", func(t *testing.T) {
		e.SetStub("")
		defer e.SetStub(m.Stub)
		out, _ := gdbtest.GDB(context.Background(), t, addr, "info registers pc")
		if !strings.Contains(out, "E.machineserver: the session's emulator is not running; power it on first") {
			t.Fatalf("debugger with the machine off:\n%s", out)
		}
	})

	t.Run("stub gone", func(t *testing.T) {
		e.SetStub(m.Stub + ".missing")
		defer e.SetStub(m.Stub)
		out, _ := gdbtest.GDB(context.Background(), t, addr, "info registers pc")
		if !strings.Contains(out, "its gdb stub does not answer") {
			t.Fatalf("debugger with a dead stub:\n%s", out)
		}
		waitDetached(t, e)
	})

	t.Run("silent client", func(t *testing.T) {
		silent, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		// A real debugger gets in regardless, and leaves the VM running.
		out, err := gdbtest.GDB(context.Background(), t, addr, "info registers pc", "detach")
		if err != nil || !strings.Contains(out, "[Inferior 1 (process 1) detached]") {
			t.Fatalf("gdb next to a silent client (err %v):\n%s", err, out)
		}
		waitDetached(t, e)
		if st := m.Status(t); st != "running" {
			t.Fatalf("after detach: %s", st)
		}
	})
}

func TestAdmitDenies(t *testing.T) {
	m := gdbtest.Start(t)
	e := gdb.New(slog.New(slog.DiscardHandler))
	e.SetStub(m.Stub)
	defer e.Close()
	addr, err := e.ListenTCP("127.0.0.1:0", func(c net.Conn) (string, error) {
		return "", errors.New("no debugging ticket for " + c.RemoteAddr().(*net.TCPAddr).IP.String())
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := gdbtest.GDB(context.Background(), t, addr.String(), "info registers pc")
	if !strings.Contains(out, "E.machineserver: no debugging ticket for 127.0.0.1") {
		t.Fatalf("denied debugger:\n%s", out)
	}
	if st := m.Status(t); st != "prelaunch" {
		t.Fatalf("a denied debugger touched the VM: %s", st)
	}
}
