package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestSpareBudget: three stopped sessions that used snapshots would keep six
// paused QEMUs (a cold one for power on, an incoming one for restore each);
// a budget of four keeps those of the two most recently used sessions. The
// gauges count exactly the live processes, and a session whose spares went
// still powers on and restores, cold, taking the room of the session that
// is now the least recently used.
func TestSpareBudget(t *testing.T) {
	pl := startStandalone(t, "MS_RUNNER_SPARES=4", "MS_IDLE_TIMEOUT=0")
	var caps struct{ Limits struct{ Spares int } }
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	if caps.Limits.Spares != 4 {
		t.Fatalf("capabilities limits.spares = %d, want 4", caps.Limits.Spares)
	}
	prog := uploadID(t, pl, "mps2-an385")
	var ids, snaps []string
	for i := range 3 {
		var s, snap map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"spare","board_config":{"board":"mps2-an385"}}`, &s)
		id := s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		pl.dialConsole(t, id, "").waitFor(t, "ready", 1)
		pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": fmt.Sprint("s", i)}, &snap)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
		ids, snaps = append(ids, id), append(snaps, snap["id"].(string))
		// Each settles before the next is used, so the order of use is this one.
		waitEmulators(t, pl.socketDir+"/"+id, 2)
	}
	a, b, c := ids[0], ids[1], ids[2]
	pl.waitSpares(t, 0, map[string]int{a: 0, b: 2, c: 2})

	// a, whose spares went, powers on cold (its history has the first
	// boot's banner too) and restores its snapshot; its new incoming spare
	// takes the room of b, now the least recently used.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+a+"/poweron", nil, nil)
	pl.dialConsole(t, a, "").waitFor(t, "ready", 2)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+a+"/restore", map[string]string{"snapshot_id": snaps[0]}, nil)
	cs := pl.dialConsole(t, a, "?offset=end")
	cs.send(t, "count\r")
	cs.waitFor(t, "count=", 1)
	pl.waitSpares(t, 1, map[string]int{a: 2, b: 0, c: 2})

	// Powered off, a gets its cold spare back within the budget.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+a+"/poweroff", nil, nil)
	pl.waitSpares(t, 0, map[string]int{a: 2, b: 0, c: 2})

	// b powers on and restores cold too.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+b+"/poweron", nil, nil)
	pl.dialConsole(t, b, "").waitFor(t, "ready", 2)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+b+"/restore", map[string]string{"snapshot_id": snaps[1]}, nil)
	cs = pl.dialConsole(t, b, "?offset=end")
	cs.send(t, "count\r")
	cs.waitFor(t, "count=", 1)
	// Its incoming spare takes the room of c, untouched the longest.
	pl.waitSpares(t, 1, map[string]int{a: 2, b: 2, c: 0})

	for _, id := range ids {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	}
	pl.waitSpares(t, 0, map[string]int{a: 0, b: 0, c: 0})
}

// waitSpares waits until each session has the given number of QEMU
// processes, running sessions' included, nothing else runs, and the
// runner's gauges count the same processes (a spare is counted once its
// launch returns, a moment after its process appears).
func (pl *platform) waitSpares(t *testing.T, running int, want map[string]int) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	gauges := map[string]float64{
		"runner_emulator_processes":  float64(total),
		"runner_emulator_spares":     float64(total - running),
		"simulation_active_sessions": float64(running),
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		have := map[string]int{}
		for id := range want {
			have[id] = len(emulators(pl.socketDir + "/" + id))
		}
		all := len(emulators(pl.socketDir))
		m := scrape(t, pl.base)
		got := map[string]float64{}
		for k := range gauges {
			got[k] = m[k]
		}
		if fmt.Sprint(have) == fmt.Sprint(want) && all == total && fmt.Sprint(got) == fmt.Sprint(gauges) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU processes per session %v (%d in all), want %v; gauges %v, want %v", have, all, want, got, gauges)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
