package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// systemSnapshots: a UART pair saved at one point, run on, restored in
// place and forked; after each, both nodes' message counters go on from
// the saved point and agree with each other. Then the refusals.
func systemSnapshots(t *testing.T, pl *platform, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name":  "saved",
		"nodes": []any{systemNode("gw", progs["uartping.elf"]), systemNode("sensor", progs["uartpong.elf"])},
		"links": []any{map[string]any{"type": "uart", "ends": []string{"gw:uart1", "sensor:uart1"}, "faults": map[string]any{"delay": "1ms"}}},
	}, &sys)
	base := "/api/v1/systems/" + sys.ID
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID
	pl.must(t, 409, "POST", base+"/snapshots", map[string]string{"name": "early"}, nil)
	pl.must(t, 200, "POST", base+"/poweron", nil, &sys)
	waitSeq(t, pl, gw, 0, pingLine, 3)

	var snap model.SystemSnapshot
	pl.must(t, 201, "POST", base+"/snapshots", map[string]string{"name": "three"}, &snap)
	if len(snap.Nodes) != 2 || snap.Nodes[0].Name != "gw" || snap.Nodes[1].Machine != "mps2-an385" || snap.Size == 0 ||
		len(snap.Spec.Links) != 1 || snap.Spec.Links[0].Faults.Delay != "1ms" || snap.SystemID != sys.ID {
		t.Fatalf("system snapshot: %+v", snap)
	}
	t.Logf("system snapshot of 2 nodes: %d bytes, nodes paused %.1f ms", snap.Size, snap.PausedMS)
	// Each node's part is an ordinary snapshot, cut where its console was
	// when all paused: the two counters agree there.
	parts := map[string]model.Snapshot{}
	for _, n := range snap.Nodes {
		var p model.Snapshot
		pl.must(t, 200, "GET", "/api/v1/snapshots/"+n.SnapshotID, nil, &p)
		if p.SystemSnapshotID != snap.ID || p.Name != "three/"+n.Name {
			t.Fatalf("node part: %+v", p)
		}
		parts[n.Name] = p
	}
	out, _, _ := pl.console(t, gw, 0)
	pinged := lastSeq(out[:parts["gw"].ConsoleOffset], pingLine)
	out, _, _ = pl.console(t, sensor, 0)
	ponged := lastSeq(out[:parts["sensor"].ConsoleOffset], pongLine)
	if ponged != pinged && ponged != pinged+1 {
		t.Fatalf("at the snapshot gw had finished message %d and sensor answered %d: not one point", pinged, ponged)
	}
	// Both run on after the capture.
	waitSeq(t, pl, gw, 0, pingLine, pinged+6)

	// Restore in place: both go back to the saved point and on from there.
	gwMark, sensorMark := consoleLen(t, pl, gw), consoleLen(t, pl, sensor)
	pl.must(t, 200, "POST", base+"/restore", map[string]string{"snapshot_id": snap.ID}, &sys)
	if sys.State != model.StateRunning || sys.Nodes[0].State != model.StateRunning || sys.Nodes[1].State != model.StateRunning {
		t.Fatalf("after restore: %+v", sys)
	}
	continuesFrom(t, pl, gw, sensor, gwMark, sensorMark, pinged, ponged)

	// Fork: a second system runs on from the same point, beside the first.
	var fork model.System
	pl.must(t, 201, "POST", "/api/v1/system-snapshots/"+snap.ID+"/systems", map[string]string{"name": "forked"}, &fork)
	if fork.ID == sys.ID || fork.Name != "forked" || fork.State != model.StateRunning || len(fork.Nodes) != 2 || fork.Links[0].Faults.Delay != "1ms" {
		t.Fatalf("fork: %+v", fork)
	}
	continuesFrom(t, pl, fork.Nodes[0].SessionID, fork.Nodes[1].SessionID, 0, 0, pinged, ponged)
	var list struct {
		Snapshots []model.SystemSnapshot `json:"system_snapshots"`
		Total     int                    `json:"total"`
	}
	pl.must(t, 200, "GET", base+"/snapshots", nil, &list)
	if list.Total != 1 || list.Snapshots[0].ID != snap.ID {
		t.Fatalf("list: %+v", list)
	}

	// Refusals.
	nd := uploadELF(t, pl, "netduino2", "fw.elf")
	var mixed, lone model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{"name": "mixed", "nodes": []any{
		systemNode("gw", progs["uartping.elf"]),
		map[string]any{"name": "nd", "board_config": map[string]string{"board": "netduino2"}, "program_id": nd},
	}}, &mixed)
	// Created before the runner of 6 is full: placement wants room now.
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{"name": "lone", "nodes": []any{systemNode("gw", progs["uartping.elf"])}}, &lone)
	pl.must(t, 200, "POST", "/api/v1/systems/"+mixed.ID+"/poweron", nil, nil)
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		contains           string
	}{
		{"node board that cannot be snapshotted", "POST", "/api/v1/systems/" + mixed.ID + "/snapshots", map[string]string{"name": "x"}, 422, "node nd: board netduino2"},
		{"no name", "POST", base + "/snapshots", map[string]string{}, 400, "name is required"},
		{"restore without snapshot_id", "POST", base + "/restore", map[string]string{}, 400, "snapshot_id is required"},
		{"restore of an unknown snapshot", "POST", base + "/restore", map[string]string{"snapshot_id": model.NewID()}, 422, "does not exist"},
		{"restore into other nodes", "POST", "/api/v1/systems/" + lone.ID + "/restore", map[string]string{"snapshot_id": snap.ID}, 422, "is of nodes gw (mps2-an385), sensor (mps2-an385)"},
		{"a node's part alone", "DELETE", "/api/v1/snapshots/" + parts["gw"].ID, nil, 409, "delete the system snapshot"},
		{"fork of an unknown snapshot", "POST", "/api/v1/system-snapshots/" + model.NewID() + "/systems", map[string]string{}, 404, "not found"},
		{"fork with a bad name", "POST", "/api/v1/system-snapshots/" + snap.ID + "/systems", map[string]string{"name": strings.Repeat("n", 200)}, 400, "name"},
	} {
		code, body := pl.call(t, c.method, c.path, c.body, nil)
		if code != c.status || !strings.Contains(string(body), c.contains) {
			t.Errorf("%s: %d %s; want %d containing %q", c.name, code, body, c.status, c.contains)
		}
	}
	var systems struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/systems", nil, &systems)

	pl.must(t, 204, "DELETE", "/api/v1/system-snapshots/"+snap.ID, nil, nil)
	pl.must(t, 404, "GET", "/api/v1/system-snapshots/"+snap.ID, nil, nil)
	for _, p := range parts {
		pl.must(t, 404, "GET", "/api/v1/snapshots/"+p.ID, nil, nil)
	}
	for _, id := range []string{sys.ID, fork.ID, mixed.ID, lone.ID} {
		pl.must(t, 204, "DELETE", "/api/v1/systems/"+id, nil, nil)
	}
	var after struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/systems", nil, &after)
	if after.Total != systems.Total-4 {
		t.Fatalf("systems left: %d of %d", after.Total, systems.Total)
	}
}

var (
	// pingLine is uartping's outcome of message n: a round trip or a
	// timeout.
	pingLine = regexp.MustCompile(`(?m)^(?:rtt|timeout) (\d+)`)
	pongLine = regexp.MustCompile(`(?m)^pong (\d+)`)
)

// numbered are the numbers of re's lines in out (its first group).
func numbered(out string, re *regexp.Regexp) []int {
	var n []int
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		n = append(n, v)
	}
	return n
}

func lastSeq(out string, re *regexp.Regexp) int {
	n := numbered(out, re)
	if len(n) == 0 {
		return -1
	}
	return n[len(n)-1]
}

func consoleLen(t *testing.T, pl *platform, id string) int {
	out, _, _ := pl.console(t, id, 0)
	return len(out)
}

// waitSeq waits until id's console from mark has a re line numbered at
// least n, and returns that console.
func waitSeq(t *testing.T, pl *platform, id string, mark int, re *regexp.Regexp, n int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, _ := pl.console(t, id, 0)
		if len(out) > mark && lastSeq(out[mark:], re) >= n {
			return out[mark:]
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s: no %v line numbered %d or more after offset %d; console:\n%s", id, re, n, mark, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// continuesFrom checks that a restored pair goes on from the saved point,
// where gw had finished message pinged and the sensor answered ponged:
// gw's first outcome is message pinged+1 and its numbers count up by one,
// the sensor's first answer is ponged+1, and every round trip gw completes
// is one the sensor answered after the restore.
func continuesFrom(t *testing.T, pl *platform, gw, sensor string, gwMark, sensorMark, pinged, ponged int) {
	t.Helper()
	out := waitSeq(t, pl, gw, gwMark, pingLine, pinged+5)
	got := numbered(out, pingLine)
	for i, n := range got {
		if n != pinged+1+i {
			t.Fatalf("gw after the restore counted %v; want %d, %d, … (from the saved point)", got, pinged+1, pinged+2)
		}
	}
	rtts := numbered(out, regexp.MustCompile(`(?m)^rtt (\d+)`))
	if len(rtts) < 3 {
		t.Fatalf("gw after the restore: only %v round trips in %v", rtts, got)
	}
	answered := map[int]bool{}
	sout := waitSeq(t, pl, sensor, sensorMark, pongLine, rtts[len(rtts)-1])
	for _, n := range numbered(sout, pongLine) {
		answered[n] = true
	}
	for _, n := range rtts {
		if !answered[n] {
			t.Fatalf("gw completed message %d after the restore, which the sensor never answered after it (sensor: %v)", n, numbered(sout, pongLine))
		}
	}
	if first := numbered(sout, pongLine)[0]; first != ponged+1 {
		t.Fatalf("sensor's first answer after the restore is %d; it had answered %d at the saved point", first, ponged)
	}
}
