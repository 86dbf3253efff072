package e2e

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/shared/testenv"
)

// TestGDB debugs a session with the real gdb-multiarch over the direct TCP
// path and over the WebSocket tunnel (msctl), on both forms of the platform.
func TestGDB(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { debugSession(t, form.start(t)) })
	}
}

type gdbInfo struct {
	TCP       string `json:"tcp"`
	WebSocket string `json:"websocket"`
	Snippets  struct {
		GDB    string         `json:"gdb"`
		Msctl  string         `json:"msctl"`
		VSCode map[string]any `json:"vscode_launch"`
	} `json:"snippets"`
}

// countAtLeast types "count" and checks the firmware's counter is >= n.
func countAtLeast(t *testing.T, pl *platform, id string, n int) {
	t.Helper()
	_, _, next := pl.console(t, id, 0)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("count\r"), nil)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _, _ := pl.console(t, id, next)
		if i := strings.Index(out, "count="); i >= 0 && strings.Contains(out[i:], "\r\n") {
			v, err := strconv.Atoi(out[i+6 : i+strings.Index(out[i:], "\r")])
			if err != nil || v < n {
				t.Fatalf("count=%v, want >= %d (%q)", v, n, out)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no count= answer")
}

func debugSession(t *testing.T, pl *platform) {
	code, body := pl.upload(t, "fw", "elf", gdbtest.Firmware(t), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "dbg", "board_config": map[string]string{"board": "netduino2"}}, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": decode(t, body)["id"].(string)}, nil)

	var info gdbInfo
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id+"/gdb", nil, &info)
	if info.TCP == "" || !strings.HasSuffix(info.WebSocket, "/api/v1/sessions/"+id+"/stream/gdb") ||
		!strings.Contains(info.Snippets.GDB, info.TCP) || info.Snippets.VSCode["gdbTarget"] != info.TCP {
		t.Fatalf("gdb info: %+v", info)
	}

	// Halted power on: nothing has run yet, so the banner is not printed.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron?halted=true", nil, nil)
	time.Sleep(200 * time.Millisecond)
	if out, _, _ := pl.console(t, id, 0); out != "" {
		t.Fatalf("a halted machine printed %q", out)
	}

	// Direct TCP: break in main, step, inspect, change a global, detach.
	out, err := gdbtest.GDB(context.Background(), t, info.TCP, "break main", "continue", "info registers pc", "next", "bt",
		"print counter", "set var counter = 1234", "print counter", "detach")
	for _, want := range []string{"Breakpoint 1, main ()", "#0  main () at src/main.c:", "$1 = 0", "$2 = 1234", "detached"} {
		if !strings.Contains(out, want) {
			t.Fatalf("gdb (err %v) lacks %q:\n%s", err, want, out)
		}
	}
	if !strings.Contains(out, "<main") {
		t.Fatalf("pc not in main:\n%s", out)
	}
	// detach resumes the firmware, which reports what gdb set.
	countAtLeast(t, pl, id, 1234)

	// Loading the program through the stub works: gdb writes the ELF and
	// puts the PC at its entry; after detach the firmware boots again and
	// its banner reaches the console.
	before, _, _ := pl.console(t, id, 0)
	banners := strings.Count(before, "ready")
	out, err = gdbtest.GDB(context.Background(), t, info.TCP, "load", "detach")
	if !strings.Contains(out, "Transfer rate") || !strings.Contains(out, "detached") {
		t.Fatalf("gdb load (err %v):\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, _, _ := pl.console(t, id, 0)
		if strings.Count(after, "ready") > banners {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner after load and detach:\n%s\nconsole: %q", out, after)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The tunnel: msctl opens a local port and carries RSP over WebSocket.
	local := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startProc(t, "msctl", []string{"MS_SERVER=" + pl.base}, "gdb", id, "--listen", local)
	waitListening(t, local)
	out, err = gdbtest.GDB(context.Background(), t, local, "print counter", "set var counter = 4321", "detach")
	if !strings.Contains(out, "$1 = ") || !strings.Contains(out, "detached") {
		t.Fatalf("gdb through the tunnel (err %v):\n%s", err, out)
	}
	countAtLeast(t, pl, id, 4321)

	// Two debuggers: the second is refused with a clear message, the first
	// keeps working.
	var first string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		first, _ = gdbtest.GDB(context.Background(), t, local, "print 1+1", "shell sleep 2", "print counter", "detach")
	}()
	waitAttached(t, pl, id)
	second, _ := gdbtest.GDB(context.Background(), t, info.TCP, "print counter")
	if !strings.Contains(second, "another debugger is attached") {
		t.Fatalf("second debugger was not refused clearly:\n%s", second)
	}
	wg.Wait()
	if !strings.Contains(first, "$2 = ") || !strings.Contains(first, "detached") {
		t.Fatalf("first debugger disturbed:\n%s", first)
	}

	// Garbage on the debugger port does not hurt the machine.
	if c, err := net.Dial("tcp", info.TCP); err == nil {
		c.Write([]byte("garbage\x00\xff#$$$\n"))
		c.Close()
	}
	countAtLeast(t, pl, id, 4321)

	// Bad input: a tunnel to a missing session.
	if code, body := pl.call(t, "GET", "/api/v1/sessions/0123456789abcdef/stream/gdb", nil, nil); code != 404 {
		t.Fatalf("tunnel to a missing session: %d %s", code, body)
	}
	if code, _ := pl.call(t, "GET", "/api/v1/sessions/0123456789abcdef/gdb", nil, nil); code != 404 {
		t.Fatalf("gdb info of a missing session: %d", code)
	}

	// gdb's kill ends the emulator: the session says so, no zombie is left,
	// and it powers on again.
	out, _ = gdbtest.GDB(context.Background(), t, info.TCP, "kill")
	st := pl.waitState(t, id, "stopped")
	if !strings.Contains(fmt.Sprint(st["reason"]), "debugger") {
		t.Fatalf("reason after gdb kill: %v\n%s", st["reason"], out)
	}
	if pids := emulators(pl.socketDir + "/" + id); len(pids) > 1 {
		t.Fatalf("after kill: %v", pids) // at most the prelaunched spare
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)

	// Deleting the session while gdb is attached cuts the link and leaves
	// no process behind.
	done := make(chan string, 1)
	go func() {
		out, _ := gdbtest.GDB(context.Background(), t, info.TCP, "print 1", "shell sleep 3", "print counter")
		done <- out
	}()
	waitAttached(t, pl, id)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	out = <-done
	if !strings.Contains(out, "Remote connection closed") && !strings.Contains(out, "Remote communication error") {
		t.Fatalf("gdb did not see the link close:\n%s", out)
	}
	if n := len(emulators(pl.socketDir + "/" + id)); n != 0 {
		t.Fatalf("%d emulators left after delete", n)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAttached waits until the session reports an attached debugger.
func waitAttached(t *testing.T, pl *platform, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var info struct {
			Attached *struct{ Who string } `json:"attached"`
		}
		pl.must(t, 200, "GET", "/api/v1/sessions/"+id+"/gdb", nil, &info)
		if info.Attached != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no debugger ever attached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
