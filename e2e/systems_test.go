package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// TestSystems runs systems of linked boards on real QEMU, in both forms:
// two mps2-an385 joined by a UART link exchange numbered messages, three
// joined by an Ethernet link ping and pong raw frames, and every refusal
// is a 4xx that says why.
func TestSystems(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			pl := form.start(t, "MS_RUNNER_CAPACITY=6")
			progs := map[string]string{}
			for _, fw := range []string{"uartping.elf", "uartpong.elf", "ethping.elf", "ethpong.elf", "vclock.elf"} {
				progs[fw] = uploadELF(t, pl, "mps2-an385", fw)
			}
			t.Run("uart", func(t *testing.T) { uartSystem(t, pl, progs) })
			t.Run("ethernet", func(t *testing.T) { ethernetSystem(t, pl, progs) })
			t.Run("bad-input", func(t *testing.T) { systemBadInput(t, pl, progs) })
			t.Run("snapshots", func(t *testing.T) { systemSnapshots(t, pl, progs) })
			t.Run("virtual-time", func(t *testing.T) { virtualSystem(t, pl, progs) })
		})
	}
}

func systemNode(name, prog string) map[string]any {
	return map[string]any{"name": name, "board_config": map[string]string{"board": "mps2-an385"}, "program_id": prog}
}

// uartSystem: power on as one, round trips both ways, link down makes the
// firmware's timeout path print and up resumes it, the capture and the
// live stream show both directions, power off, reset, delete.
func uartSystem(t *testing.T, pl *platform, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name":  "pair",
		"nodes": []any{systemNode("gw", progs["uartping.elf"]), systemNode("sensor", progs["uartpong.elf"])},
		"links": []any{map[string]any{"type": "uart", "ends": []string{"gw:uart1", "sensor:uart1"}}},
	}, &sys)
	if sys.State != model.StateCreated || len(sys.Nodes) != 2 || sys.Links[0].Name != "link0" || sys.Links[0].Ends[1] != "sensor:uart1" {
		t.Fatalf("created: %+v", sys)
	}
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID
	var s model.Session
	pl.must(t, 200, "GET", "/api/v1/sessions/"+gw, nil, &s)
	if s.SystemID != sys.ID || s.ProgramID != progs["uartping.elf"] || s.RunnerID != sys.RunnerID {
		t.Fatalf("node session: %+v", s)
	}
	base := "/api/v1/systems/" + sys.ID
	pl.must(t, 200, "POST", base+"/poweron", nil, &sys)
	if sys.State != model.StateRunning || sys.Nodes[0].State != model.StateRunning || sys.Nodes[1].State != model.StateRunning {
		t.Fatalf("after poweron: %+v", sys)
	}
	waitConsole(t, pl, gw, "rtt ")
	waitConsole(t, pl, sensor, "pong ")

	// The live stream, opened now, carries what crosses from here on.
	ws := pl.dialLinkStream(t, base+"/links/link0/stream")

	var ls struct {
		Link model.SystemLink `json:"link"`
		UART *runnerapi.Link  `json:"uart"`
	}
	pl.must(t, 200, "POST", base+"/links/link0", map[string]any{"down": true}, &ls)
	if !ls.Link.Faults.Down || ls.UART == nil || !ls.UART.Faults.Down || !ls.UART.Attached {
		t.Fatalf("link down: %+v", ls)
	}
	out, _, _ := pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "timeout ")
	pl.must(t, 200, "POST", base+"/links/link0", map[string]any{}, &ls)
	out, _, _ = pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "rtt ")
	pl.must(t, 200, "GET", base+"/links/link0", nil, &ls)
	if ls.UART == nil || ls.UART.Directions[0].Dropped == 0 || ls.UART.Directions[1].Delivered == 0 {
		t.Fatalf("counters: %+v", ls.UART)
	}

	var c runnerapi.LinkCapture
	pl.must(t, 200, "GET", base+"/links/link0/capture", nil, &c)
	sent := map[string]string{}
	for _, r := range c.Records {
		sent[r.From] += string(r.Data)
	}
	if !strings.Contains(sent[gw+":uart1"], "PING ") || !strings.Contains(sent[sensor+":uart1"], "PONG ") {
		t.Fatalf("capture: %v", sent)
	}
	var later runnerapi.LinkCapture
	pl.must(t, 200, "GET", base+"/links/link0/capture?after="+jsonNumber(c.Next), nil, &later)
	for _, r := range later.Records {
		if r.Seq <= c.Next {
			t.Fatalf("after=%d returned record %d", c.Next, r.Seq)
		}
	}
	ws.waitFrom(t, gw+":uart1")
	ws.waitFrom(t, sensor+":uart1")

	pl.must(t, 200, "POST", base+"/reset", nil, &sys)
	waitConsoleFrom(t, pl, gw, len(out), "rtt ")
	pl.must(t, 200, "POST", base+"/poweroff", nil, &sys)
	if sys.State != model.StateStopped || sys.Nodes[0].State != model.StateStopped || sys.Nodes[1].State != model.StateStopped {
		t.Fatalf("after poweroff: %+v", sys)
	}
	pl.must(t, 409, "POST", base+"/poweroff", nil, nil)
	// A node goes with its system.
	pl.must(t, 409, "DELETE", "/api/v1/sessions/"+gw, nil, nil)
	pl.must(t, 200, "POST", base+"/poweron", nil, &sys)
	pl.must(t, 409, "POST", base+"/poweron", nil, nil)
	out, _, _ = pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "rtt ")

	var list struct {
		Systems []model.System `json:"systems"`
		Total   int            `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/systems", nil, &list)
	if list.Total < 1 {
		t.Fatalf("list: %+v", list)
	}
	pl.must(t, 204, "DELETE", base, nil, nil)
	pl.must(t, 404, "GET", base, nil, nil)
	for _, id := range []string{gw, sensor} {
		pl.must(t, 404, "GET", "/api/v1/sessions/"+id, nil, nil)
		if pids := emulators(pl.socketDir + "/" + id); len(pids) != 0 {
			t.Fatalf("QEMU of node %s left after the system's delete: %v", id, pids)
		}
	}
	ws.waitClosed(t)
}

// ethernetSystem: three nodes on one Ethernet link find each other by
// MAC, round trips cross the runner's switch, and the capture is a pcap
// that tshark reads.
func ethernetSystem(t *testing.T, pl *platform, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name":  "lan",
		"nodes": []any{systemNode("gw", progs["ethping.elf"]), systemNode("n2", progs["ethpong.elf"]), systemNode("n3", progs["ethpong.elf"])},
		"links": []any{map[string]any{"type": "ethernet", "name": "lan0", "nodes": []string{"gw", "n2", "n3"}}},
	}, &sys)
	macs := map[string]bool{}
	for _, n := range sys.Nodes {
		macs[n.MAC] = true
	}
	if len(macs) != 3 || macs[""] {
		t.Fatalf("MACs: %+v", sys.Nodes)
	}
	base := "/api/v1/systems/" + sys.ID
	pl.must(t, 200, "POST", base+"/poweron", nil, &sys)
	gw := sys.Nodes[0].SessionID
	waitConsole(t, pl, gw, "mac "+sys.Nodes[0].MAC)
	waitConsole(t, pl, gw, "peer "+sys.Nodes[1].MAC)
	waitConsole(t, pl, gw, "peer "+sys.Nodes[2].MAC)
	waitConsole(t, pl, gw, "rtt ")
	waitConsole(t, pl, sys.Nodes[2].SessionID, "pong ")

	pcap := pl.must(t, 200, "GET", base+"/links/lan0/capture", nil, nil)
	f := filepath.Join(t.TempDir(), "lan0.pcap")
	if err := os.WriteFile(f, pcap, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", f, "-Y", "eth.type == 0x88b5", "-T", "fields", "-e", "eth.src").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, out)
	}
	for _, n := range sys.Nodes {
		if !strings.Contains(string(out), n.MAC) {
			t.Fatalf("tshark shows no frame from %s (%s): %s", n.Name, n.MAC, out)
		}
	}
	var ls struct {
		Ethernet *runnerapi.Segment `json:"ethernet"`
	}
	pl.must(t, 200, "GET", base+"/links/lan0", nil, &ls)
	if ls.Ethernet == nil || len(ls.Ethernet.Ports) != 3 || ls.Ethernet.Ports[0].In == 0 {
		t.Fatalf("segment: %+v", ls.Ethernet)
	}
	pl.must(t, 204, "DELETE", base, nil, nil)
	for _, n := range sys.Nodes {
		if pids := emulators(pl.socketDir + "/" + n.SessionID); len(pids) != 0 {
			t.Fatalf("QEMU of node %s left after the system's delete: %v", n.Name, pids)
		}
	}
}

// systemBadInput: each refusal says why, and leaves no session behind.
func systemBadInput(t *testing.T, pl *platform, progs map[string]string) {
	var before struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/sessions", nil, &before)
	ping, pong := progs["uartping.elf"], progs["uartpong.elf"]
	two := []any{systemNode("gw", ping), systemNode("sensor", pong)}
	uart := func(ends ...string) map[string]any { return map[string]any{"type": "uart", "ends": ends} }
	many := []any{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		many = append(many, systemNode(n, pong))
	}
	netduino := map[string]any{"name": "sensor", "board_config": map[string]string{"board": "netduino2"}, "program_id": uploadELF(t, pl, "netduino2", "fw.elf")}
	for _, c := range []struct {
		name string
		body map[string]any
		code int
		want string
	}{
		{"no nodes", map[string]any{"name": "x", "nodes": []any{}}, 400, "1 to 16 nodes"},
		{"unknown node", map[string]any{"name": "x", "nodes": two, "links": []any{uart("gw:uart1", "nope:uart1")}}, 400, "not node:port of a node"},
		{"unknown port", map[string]any{"name": "x", "nodes": two, "links": []any{uart("gw:uart9", "sensor:uart1")}}, 400, "has no port"},
		{"port linked twice", map[string]any{"name": "x", "nodes": two, "links": []any{uart("gw:uart1", "sensor:uart1"), uart("gw:uart1", "sensor:uart2")}}, 400, "in link link0 already"},
		{"one end", map[string]any{"name": "x", "nodes": two, "links": []any{uart("gw:uart1")}}, 400, "two ends"},
		{"bad link type", map[string]any{"name": "x", "nodes": two, "links": []any{map[string]any{"type": "can", "nodes": []string{"gw", "sensor"}}}}, 400, "not a link type"},
		{"duplicate node", map[string]any{"name": "x", "nodes": []any{systemNode("gw", ping), systemNode("gw", pong)}}, 400, "used twice"},
		{"bad faults", map[string]any{"name": "x", "nodes": two, "links": []any{map[string]any{"type": "uart", "ends": []string{"gw:uart1", "sensor:uart1"}, "faults": map[string]any{"loss": 2}}}}, 400, "probability"},
		{"board without ethernet", map[string]any{"name": "x", "nodes": []any{systemNode("gw", progs["ethping.elf"]), netduino}, "links": []any{map[string]any{"type": "ethernet", "nodes": []string{"gw", "sensor"}}}}, 422, "has no Ethernet NIC"},
		{"more nodes than a runner holds", map[string]any{"name": "x", "nodes": many}, 422, "holds more than 6"},
		{"unknown clock", map[string]any{"name": "x", "nodes": two, "time": "sidereal"}, 400, "is not a clock; allowed"},
		{"unknown program", map[string]any{"name": "x", "nodes": []any{systemNode("gw", "0123456789abcdef")}}, 404, "not found"},
	} {
		body := pl.must(t, c.code, "POST", "/api/v1/systems", c.body, nil)
		if !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %s does not say %q", c.name, body, c.want)
		}
	}
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{"name": "ok", "nodes": two, "links": []any{uart("gw:uart1", "sensor:uart1")}}, &sys)
	base := "/api/v1/systems/" + sys.ID
	pl.must(t, 404, "GET", base+"/links/nope", nil, nil)
	pl.must(t, 400, "POST", base+"/links/link0", map[string]any{"delay": "forever"}, nil)
	pl.must(t, 409, "POST", base+"/reset", nil, nil)
	pl.must(t, 409, "GET", base+"/links/link0/capture", nil, nil)
	pl.must(t, 404, "GET", "/api/v1/systems/0123456789abcdef", nil, nil)
	pl.must(t, 204, "DELETE", base, nil, nil)
	var after struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/sessions", nil, &after)
	if after.Total != before.Total {
		t.Fatalf("sessions before the refused and deleted systems: %d, after: %d", before.Total, after.Total)
	}
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// linkStream is a live link stream's JSON messages.
type linkStream struct {
	c    *websocket.Conn
	msgs chan map[string]any
}

func (pl *platform) dialLinkStream(t *testing.T, path string) *linkStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(pl.base, "http", "ws", 1)+path, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.SetReadLimit(1 << 20)
	ls := &linkStream{c: c, msgs: make(chan map[string]any, 4096)}
	go func() {
		defer close(ls.msgs)
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				select {
				case ls.msgs <- m:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return ls
}

// waitFrom waits for a record sent from end.
func (ls *linkStream) waitFrom(t *testing.T, end string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-ls.msgs:
			if !ok {
				t.Fatalf("link stream closed before a record from %s", end)
			}
			if m["from"] == end {
				return
			}
		case <-timeout:
			t.Fatalf("no record from %s on the link stream", end)
		}
	}
}

// waitClosed waits until the stream ends.
func (ls *linkStream) waitClosed(t *testing.T) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-ls.msgs:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the link stream did not end when its system was deleted")
		}
	}
}
