package e2e

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// busyDone is vclock's report of a CPU-bound loop: the guest time it took.
var busyDone = regexp.MustCompile(`busy done (\d+)`)

// tLine is vclock's guest clock, printed every 100 ms of guest time.
var tLine = regexp.MustCompile(`(?m)^t (\d+)`)

// virtualSystem: two vclock nodes on virtual time. One runs a CPU-bound
// loop, which takes the instruction counter's time (on the host's clock it
// takes a tenth of it); the runner's barrier keeps both guest clocks
// together meanwhile and says what it measured; a system snapshot stops
// and restarts the barrier around the capture.
func virtualSystem(t *testing.T, pl *platform, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name": "clocks", "time": "virtual",
		"nodes": []any{systemNode("busy", progs["vclock.elf"]), systemNode("idle", progs["vclock.elf"])},
	}, &sys)
	if sys.Time != model.TimeVirtual {
		t.Fatalf("time: %q", sys.Time)
	}
	base := "/api/v1/systems/" + sys.ID
	busy, idle := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID
	var s model.Session
	pl.must(t, 200, "GET", "/api/v1/sessions/"+busy, nil, &s)
	if !s.VirtualTime {
		t.Fatalf("node session: %+v", s)
	}
	pl.must(t, 409, "GET", base+"/clock", nil, nil)
	pl.must(t, 200, "POST", base+"/poweron", nil, &sys)
	waitConsole(t, pl, busy, "t ")
	waitConsole(t, pl, idle, "t ")

	cs := pl.dialConsole(t, busy, "")
	cs.send(t, "busy 20\r")
	cs.waitFor(t, "busy done ", 1)
	out, _, _ := pl.console(t, busy, 0)
	m := busyDone.FindStringSubmatch(out)
	guest, _ := strconv.Atoi(m[1])
	// 20 million iterations of about 9 instructions at 16 ns each.
	if guest < 1280 {
		t.Fatalf("busy 20 took %d guest ms: not on the instruction counter", guest)
	}
	// Both guest clocks, read at about one host instant, agree within a
	// generous bound (the benchmark measures the drift itself).
	a, b := lastClock(t, pl, busy), lastClock(t, pl, idle)
	if d := a - b; d > 1000 || d < -1000 {
		t.Fatalf("guest clocks %d and %d ms apart", a, b)
	}
	var c runnerapi.Clock
	pl.must(t, 200, "GET", base+"/clock", nil, &c)
	if !c.Running || c.Polls == 0 || c.Quantum != "20ms" || len(c.Sessions) != 2 || c.MaxSpreadMS > 1000 {
		t.Fatalf("clock: %+v", c)
	}
	t.Logf("busy 20: %d guest ms; clocks %d and %d ms; barrier %+v", guest, a, b, c)

	var snap model.SystemSnapshot
	pl.must(t, 201, "POST", base+"/snapshots", map[string]string{"name": "virtual"}, &snap)
	pl.must(t, 200, "GET", base+"/clock", nil, &c)
	if !c.Running {
		t.Fatalf("clock after a snapshot: %+v", c)
	}
	mark := consoleLen(t, pl, idle)
	pl.must(t, 200, "POST", base+"/restore", map[string]string{"snapshot_id": snap.ID}, &sys)
	pl.must(t, 200, "GET", base+"/clock", nil, &c)
	if !c.Running {
		t.Fatalf("clock after a restore: %+v", c)
	}
	// The restored guests run on: their clocks print again.
	waitSeq(t, pl, idle, mark, tLine, 0)

	pl.must(t, 200, "POST", base+"/poweroff", nil, &sys)
	pl.must(t, 409, "GET", base+"/clock", nil, nil)
	pl.must(t, 204, "DELETE", "/api/v1/system-snapshots/"+snap.ID, nil, nil)
	pl.must(t, 204, "DELETE", base, nil, nil)
}

// lastClock is the last guest time id's vclock printed.
func lastClock(t *testing.T, pl *platform, id string) int {
	t.Helper()
	out, _, _ := pl.console(t, id, 0)
	n := lastSeq(out, tLine)
	if n < 0 {
		t.Fatalf("session %s printed no guest time", id)
	}
	return n
}
