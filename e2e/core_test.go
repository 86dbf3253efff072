package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The seed's request, verbatim.
const seedSession = `{"name":"my-session","backend":"qemu","board_config":{"processor":{"model":"cortex-m3",
"frequency":72000000},"memory":{"flash":{"base":134217728,"size":131072},"ram":{"base":
536870912,"size":20480}}}}`

func TestPlatform(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			pl := form.start(t)
			t.Run("lifecycle", func(t *testing.T) { lifecycle(t, pl) })
			t.Run("formats", func(t *testing.T) { formats(t, pl) })
			t.Run("exits", func(t *testing.T) { exits(t, pl) })
			t.Run("bad-input", func(t *testing.T) { badInput(t, pl) })
		})
	}
}

// lifecycle is the whole user path on the seed's board: upload, create,
// load, power on, read the banner, echo, reset, power off, on, delete.
func lifecycle(t *testing.T, pl *platform) {
	var caps struct {
		Backends []struct {
			Name, Version string
			Boards        []struct{ Name string }
		}
	}
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	if len(caps.Backends) != 1 || caps.Backends[0].Name != "qemu" || !strings.HasPrefix(caps.Backends[0].Version, "7.") {
		t.Fatalf("capabilities: %+v", caps)
	}

	code, body := pl.upload(t, "fw", "elf", firmware(t, "netduino2", "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	prog := decode(t, body)
	if len(prog["sha256"].(string)) != 64 || prog["entry"] == nil {
		t.Fatalf("program: %v", prog)
	}

	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", seedSession, &s)
	if s["machine"] != "netduino2" || s["state"] != "created" {
		t.Fatalf("seed session resolved to %v in state %v", s["machine"], s["state"])
	}
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog["id"].(string)}, &s)
	if s["program_id"] != prog["id"] {
		t.Fatalf("program not loaded: %v", s)
	}

	// Output printed before any client connects is kept: power on first.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, &s)
	if s["state"] != "running" {
		t.Fatalf("after poweron: %v", s)
	}
	time.Sleep(300 * time.Millisecond)
	cs := pl.dialConsole(t, id, "")
	cs.waitFor(t, "MS-TEST-FW netduino2 ready", 1)
	cs.send(t, "hello\r")
	cs.waitFor(t, "hello", 1)

	// HTTP console: offsets resume without loss or duplication.
	c1, off1, next1 := pl.console(t, id, 0)
	if off1 != 0 || !strings.HasPrefix(c1, "MS-TEST-FW netduino2 ready") || !strings.Contains(c1, "hello") {
		t.Fatalf("console from 0 (offset %d): %q", off1, c1)
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("count\r"), nil)
	cs.waitFor(t, "count=", 1)
	c2, off2, _ := pl.console(t, id, next1)
	if off2 != next1 || !strings.Contains(c2, "count=") || strings.Contains(c2, "ready") {
		t.Fatalf("console from %d: offset %d %q", next1, off2, c2)
	}

	// Reset reboots the firmware; the history persists across it.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/reset", nil, nil)
	cs.waitFor(t, "MS-TEST-FW netduino2 ready", 2)

	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, &s)
	if s["state"] != "stopped" {
		t.Fatalf("after poweroff: %v", s)
	}
	// What is left is one paused spare the runner prelaunches for the next
	// power on, and that power on uses it instead of a cold start.
	spare := waitEmulators(t, pl.socketDir+"/"+id, 1)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, &s)
	if now := emulators(pl.socketDir + "/" + id); len(now) != 1 || now[0] != spare[0] {
		t.Fatalf("power on did not use the spare %v: %v", spare, now)
	}
	cs.waitFor(t, "MS-TEST-FW netduino2 ready", 3)
	all, _, _ := pl.console(t, id, 0)
	if strings.Count(all, "MS-TEST-FW netduino2 ready") != 3 {
		t.Fatalf("history across power cycles: %q", all)
	}

	var list struct {
		Sessions []map[string]any `json:"sessions"`
		Total    int              `json:"total"`
		Page     int              `json:"page"`
		PageSize int              `json:"page_size"`
	}
	pl.must(t, 200, "GET", "/api/v1/sessions?page=1&page_size=5", nil, &list)
	if list.Total < 1 || list.Page != 1 || list.PageSize != 5 {
		t.Fatalf("list: %+v", list)
	}

	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	pl.must(t, 404, "GET", "/api/v1/sessions/"+id, nil, nil)
	if n := len(emulators(pl.socketDir + "/" + id)); n != 0 {
		t.Fatalf("%d emulators after delete", n)
	}
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := jsonUnmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// console reads the HTTP console from offset.
func (pl *platform) console(t testing.TB, id string, offset int64) (string, int64, int64) {
	t.Helper()
	resp, err := httpGet(pl.base + fmt.Sprintf("/api/v1/sessions/%s/console?offset=%d", id, offset))
	if err != nil {
		t.Fatal(err)
	}
	if resp.code != 200 {
		t.Fatalf("console: %d %s", resp.code, resp.body)
	}
	from, _ := strconv.ParseInt(resp.header.Get("X-Console-Offset"), 10, 64)
	next, _ := strconv.ParseInt(resp.header.Get("X-Console-Next-Offset"), 10, 64)
	return string(resp.body), from, next
}

// formats runs every image format on both test boards.
func formats(t *testing.T, pl *platform) {
	for _, board := range []string{"netduino2", "mps2-an385"} {
		for _, f := range []string{"elf", "bin", "hex"} {
			t.Run(board+"/"+f, func(t *testing.T) {
				code, body := pl.upload(t, board+"-"+f, f, firmware(t, board, "fw."+f), nil)
				if code != 201 {
					t.Fatalf("upload: %d %s", code, body)
				}
				prog := decode(t, body)
				var s map[string]any
				pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": board, "backend": "qemu", "board_config": map[string]string{"board": board}}, &s)
				id := s["id"].(string)
				defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
				pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog["id"].(string)}, nil)
				cs := pl.dialConsole(t, id, "")
				pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
				cs.waitFor(t, "MS-TEST-FW "+board+" ready", 1)
				cs.send(t, "echo-"+f+"\r")
				cs.waitFor(t, "echo-"+f, 1)
			})
		}
	}
}

// exits checks that the session state tells the truth when QEMU ends on
// its own: a semihosting exit, and a crash (SIGKILL).
func exits(t *testing.T, pl *platform) {
	code, body := pl.upload(t, "fw", "elf", firmware(t, "mps2-an385", "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	pid := decode(t, body)["id"].(string)
	newSession := func() (string, *console) {
		var s map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "exit", "board_config": map[string]string{"board": "mps2-an385"}}, &s)
		id := s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": pid}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		cs := pl.dialConsole(t, id, "")
		cs.waitFor(t, "ready", 1)
		return id, cs
	}

	id, cs := newSession()
	cs.send(t, "exit 0\r")
	s := pl.waitState(t, id, "stopped")
	if !strings.Contains(fmt.Sprint(s["reason"]), "status 0") {
		t.Errorf("exit 0 reason: %v", s["reason"])
	}

	id, cs = newSession()
	cs.send(t, "exit 3\r")
	s = pl.waitState(t, id, "error")
	if !strings.Contains(fmt.Sprint(s["reason"]), "status 3") {
		t.Errorf("exit 3 reason: %v", s["reason"])
	}
	// The session can be powered on again after an error.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs.waitFor(t, "ready", 2)

	// Only the running one: its spare became it, and the next spare is
	// prelaunched only after it stops.
	pids := emulators(pl.socketDir + "/" + id)
	if len(pids) != 1 {
		t.Fatalf("want 1 emulator, have %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	s = pl.waitState(t, id, "error")
	if !strings.Contains(fmt.Sprint(s["reason"]), "signal") {
		t.Errorf("crash reason: %v", s["reason"])
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}

// waitEmulators waits until exactly n emulators use dir and returns them.
func waitEmulators(t testing.TB, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := emulators(dir)
		if len(pids) == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d emulators in %s, have %v", n, dir, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
