package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// TestRunnerLink joins two real mps2-an385 sessions' UART1 through the
// runner's link API (the seam systems of linked boards will be built on;
// the public API has no systems yet): uartping's PINGs reach uartpong and
// its PONGs come back; down makes the firmware's timeout path print, up
// resumes the round trips; the capture holds both directions; deleting
// the sessions leaves the link detached.
func TestRunnerLink(t *testing.T) {
	pl := startDistributed(t)
	board := map[string]string{"board": "mps2-an385"}
	sessions := map[string]string{}
	for _, fw := range []string{"uartping.elf", "uartpong.elf"} {
		prog := uploadELF(t, pl, "mps2-an385", fw)
		var s model.Session
		pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": strings.TrimSuffix(fw, ".elf"), "board_config": board}, &s)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/poweron", nil, nil)
		sessions[fw] = s.ID
	}
	ping, pong := sessions["uartping.elf"], sessions["uartpong.elf"]
	rc, err := runnerapi.NewClient(pl.runnerURL, runnerToken)
	if err != nil {
		t.Fatal(err)
	}
	id := model.NewID()
	l, err := rc.PutLink(t.Context(), id, runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{{Session: ping, Port: "uart1"}, {Session: pong, Port: "uart1"}}, Seed: 1})
	if err != nil || !l.Attached {
		t.Fatalf("link: %+v %v", l, err)
	}
	after := func(mark int, want string) {
		t.Helper()
		waitConsoleFrom(t, pl, ping, mark, want)
	}
	after(0, "rtt ")
	waitConsole(t, pl, pong, "pong ")

	if _, err := rc.SetLinkFaults(t.Context(), id, runnerapi.LinkFaults{Down: true}); err != nil {
		t.Fatal(err)
	}
	out, _, _ := pl.console(t, ping, 0)
	after(len(out), "timeout ")
	if _, err := rc.SetLinkFaults(t.Context(), id, runnerapi.LinkFaults{}); err != nil {
		t.Fatal(err)
	}
	out, _, _ = pl.console(t, ping, 0)
	after(len(out), "rtt ")

	c, err := rc.LinkCapture(t.Context(), id, 0)
	sent := map[string]string{}
	for _, r := range c.Records {
		sent[r.From] += string(r.Data)
	}
	if err != nil || !strings.Contains(sent[ping+":uart1"], "PING ") || !strings.Contains(sent[pong+":uart1"], "PONG ") {
		t.Fatalf("capture (err %v): %v", err, sent)
	}
	if l, err = rc.GetLink(t.Context(), id); err != nil || l.Directions[0].Dropped == 0 || l.Directions[1].Delivered == 0 {
		t.Fatalf("counters: %+v %v", l, err)
	}

	for _, s := range []string{ping, pong} {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+s, nil, nil)
	}
	if l, err = rc.GetLink(t.Context(), id); err != nil || l.Attached {
		t.Fatalf("after the sessions' delete: %+v %v", l, err)
	}
	if err := rc.DeleteLink(t.Context(), id); err != nil {
		t.Fatal(err)
	}
}

// waitConsoleFrom waits until the session's console past byte mark shows
// want.
func waitConsoleFrom(t *testing.T, pl *platform, id string, mark int, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, _ := pl.console(t, id, 0)
		if len(out) > mark && strings.Contains(out[mark:], want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console never showed %q after byte %d: %q", want, mark, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
