package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
	"github.com/machineserver/machineserver/shared/model"
)

// TestSystemEvents drives a system of two linked boards through the
// system commands over CloudEvents, in both forms: create, power on, link
// down (the firmware's timeout path prints), power off, delete; each
// command is answered with its notification, which also reaches K_SINK and
// the event stream (filtered by system, and by a node's session). Bad
// commands are 4xx that say why and leave nothing behind. msctl's systems
// commands then run the same life against the real platform.
func TestSystemEvents(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			rec := &eventstest.Recorder{}
			sink := httptest.NewServer(rec)
			defer sink.Close()
			pl := form.start(t, "K_SINK="+sink.URL)
			ping := uploadELF(t, pl, "mps2-an385", "uartping.elf")
			pong := uploadELF(t, pl, "mps2-an385", "uartpong.elf")
			spec := model.SystemSpec{
				Name: "ce-pair",
				Nodes: []model.NodeSpec{
					{Name: "gw", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, ProgramID: ping},
					{Name: "sensor", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, ProgramID: pong},
				},
				Links: []model.LinkSpec{{Type: model.LinkUART, Ends: []string{"gw:uart1", "sensor:uart1"}}},
			}
			t.Run("commands", func(t *testing.T) { systemCommands(t, pl, rec, spec) })
			t.Run("bad-input", func(t *testing.T) { systemCommandsBadInput(t, pl, spec) })
			t.Run("msctl", func(t *testing.T) { msctlSystems(t, pl, spec) })
		})
	}
}

func systemCommands(t *testing.T, pl *platform, rec *eventstest.Recorder, spec model.SystemSpec) {
	url := pl.events["sessions"]
	var sys model.System
	send(t, url, "structured", events.TypeSystemCreate, spec, 200, events.TypeSystemCreated, &sys)
	if sys.ID == "" || sys.State != model.StateCreated || len(sys.Nodes) != 2 || len(sys.Links) != 1 || sys.Links[0].Name != "link0" {
		t.Fatalf("created: %+v", sys)
	}
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID
	var s model.Session
	pl.must(t, 200, "GET", "/api/v1/sessions/"+gw, nil, &s)
	if s.SystemID != sys.ID || s.ProgramID != spec.Nodes[0].ProgramID {
		t.Fatalf("node session: %+v", s)
	}

	send(t, url, "binary", events.TypeSystemPowerOn, events.SystemRef{SystemID: sys.ID}, 200, events.TypeSystemStarted, &sys)
	if sys.State != model.StateRunning || sys.Nodes[0].State != model.StateRunning || sys.Nodes[1].State != model.StateRunning {
		t.Fatalf("after poweron: %+v", sys)
	}
	waitConsole(t, pl, gw, "rtt ")
	waitConsole(t, pl, sensor, "pong ")

	// Link down: the reply is the link as it is now, and the firmware
	// notices.
	var changed events.LinkChanged
	send(t, url, "binary", events.TypeSystemSetLink, events.SetLink{SystemID: sys.ID, Link: "link0", Faults: model.LinkFaults{Down: true}}, 200, events.TypeSystemLinkChanged, &changed)
	if changed.SystemID != sys.ID || changed.Link.Name != "link0" || !changed.Link.Faults.Down {
		t.Fatalf("link changed: %+v", changed)
	}
	out, _, _ := pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "timeout ")

	send(t, url, "structured", events.TypeSystemPowerOff, events.SystemRef{SystemID: sys.ID}, 200, events.TypeSystemStopped, &sys)
	if sys.State != model.StateStopped || sys.Nodes[0].State != model.StateStopped || sys.Nodes[1].State != model.StateStopped {
		t.Fatalf("after poweroff: %+v", sys)
	}
	send(t, url, "binary", events.TypeSystemDelete, events.SystemRef{SystemID: sys.ID}, 200, events.TypeSystemDeleted, &sys)
	pl.must(t, 404, "GET", "/api/v1/systems/"+sys.ID, nil, nil)
	for _, id := range []string{gw, sensor} {
		pl.must(t, 404, "GET", "/api/v1/sessions/"+id, nil, nil)
		if pids := emulators(pl.socketDir + "/" + id); len(pids) != 0 {
			t.Fatalf("QEMU of node %s left after the system's delete: %v", id, pids)
		}
	}
	// Deleted twice: the same 404 as the REST route.
	send(t, url, "binary", events.TypeSystemDelete, events.SystemRef{SystemID: sys.ID}, 404, "", nil)

	// K_SINK got every notification, about the system, with its nodes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lifecycle := []string{events.TypeSystemCreated, events.TypeSystemStarted, events.TypeSystemLinkChanged, events.TypeSystemStopped, events.TypeSystemDeleted}
	for _, typ := range lifecycle {
		evs, err := rec.Wait(ctx, typ, 1)
		if err != nil {
			t.Fatalf("sink never got %s: %v (got %d events)", typ, err, len(rec.Events()))
		}
		if evs[0].Subject() != sys.ID || !strings.HasPrefix(evs[0].Source(), "/machineserver/") {
			t.Errorf("%s: subject %q source %q, want subject %s", typ, evs[0].Subject(), evs[0].Source(), sys.ID)
		}
		if typ == events.TypeSystemLinkChanged {
			continue
		}
		var got model.System
		if err := evs[0].DataAs(&got); err != nil || got.ID != sys.ID || len(got.Nodes) != 2 || got.Nodes[0].SessionID != gw {
			t.Errorf("%s data: %+v %v", typ, got, err)
		}
	}

	// The event stream, replayed from its start: system= gets the
	// system's own events in order; session= of a node gets the system
	// events that list it (the link change names no session) and nothing
	// about another system.
	bySystem := pl.dialEvents(t, "", "system="+sys.ID+"&after=0")
	var preds []func(cloudevents.Event) bool
	for _, typ := range lifecycle {
		preds = append(preds, is(typ, sys.ID))
	}
	bySystem.waitFor(t, "the system's events on ?system=", preds...)
	byNode := pl.dialEvents(t, "", "session="+sensor+"&types=io.machineserver.system.&after=0")
	byNode.waitFor(t, "the system's events on ?session= of a node", is(events.TypeSystemCreated, sys.ID), is(events.TypeSystemStarted, sys.ID),
		is(events.TypeSystemStopped, sys.ID), is(events.TypeSystemDeleted, sys.ID))
	for _, e := range byNode.events() {
		if e.Subject() != sys.ID || e.Type() == events.TypeSystemLinkChanged {
			t.Errorf("?session=%s&types=io.machineserver.system. sent %s about %s", sensor, e.Type(), e.Subject())
		}
	}
}

// systemCommandsBadInput: a command the receiver cannot decode, or one the
// operation refuses, is the 4xx the REST route gives, saying why (a 4xx is
// not retried by Knative), and creates nothing.
func systemCommandsBadInput(t *testing.T, pl *platform, spec model.SystemSpec) {
	var before struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/sessions", nil, &before)
	good, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	noLinkEnd := spec
	noLinkEnd.Links = []model.LinkSpec{{Type: model.LinkUART, Ends: []string{"gw:uart1", "nope:uart1"}}}
	unknownLink, _ := json.Marshal(noLinkEnd)
	for _, c := range []struct {
		name, typ string
		data      []byte
		code      int
		says      string
	}{
		{"not JSON", events.TypeSystemCreate, []byte(`{"name": "x", "nodes": [`), 400, ""},
		{"not an object", events.TypeSystemCreate, []byte(`["gw", "sensor"]`), 400, ""},
		{"nodes of the wrong type", events.TypeSystemCreate, []byte(`{"name": "x", "nodes": "gw,sensor"}`), 400, "nodes"},
		{"unknown field", events.TypeSystemCreate, append(bytes.TrimSuffix(good, []byte("}")), []byte(`,"extra":1}`)...), 400, "extra"},
		{"no nodes", events.TypeSystemCreate, []byte(`{"name": "x", "nodes": []}`), 400, "1 to 16 nodes"},
		{"unknown node in a link", events.TypeSystemCreate, unknownLink, 400, "not node:port of a node"},
		{"no system_id", events.TypeSystemPowerOn, []byte(`{}`), 400, "system_id is required"},
		{"unknown system", events.TypeSystemPowerOn, []byte(`{"system_id": "0123456789abcdef"}`), 404, "not found"},
		{"no link", events.TypeSystemSetLink, []byte(`{"system_id": "0123456789abcdef", "faults": {"down": true}}`), 400, "system_id and link are required"},
		{"bad faults", events.TypeSystemSetLink, []byte(`{"system_id": "0123456789abcdef", "link": "link0", "faults": {"loss": 2}}`), 400, "probability"},
	} {
		code, body := postCommand(t, pl.events["sessions"], c.typ, c.data)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s (%s): %d %s; want %d saying %q", c.name, c.typ, code, body, c.code, c.says)
		}
		var e apiError
		if json.Unmarshal([]byte(body), &e) != nil || e.Error.Message == "" {
			t.Errorf("%s: the answer %q is not the API's error JSON", c.name, body)
		}
	}
	var after struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/sessions", nil, &after)
	if after.Total != before.Total {
		t.Fatalf("sessions before the refused commands: %d, after: %d", before.Total, after.Total)
	}
	var systems struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/systems", nil, &systems)
	if systems.Total != 0 {
		t.Fatalf("refused commands left %d systems", systems.Total)
	}
}

// postCommand posts data as a binary-mode command event as it is (send
// marshals its data, so it cannot send what is not JSON) and returns the
// status and the body.
func postCommand(t *testing.T, url, typ string, data []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", "test-bad-"+typ+"-"+time.Now().Format("150405.000000"))
	req.Header.Set("Ce-Source", "/e2e/test")
	req.Header.Set("Ce-Type", typ)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	return resp.StatusCode, body.String()
}

// msctlSystems runs msctl's systems commands against the platform: create
// from a spec file and powered on, get, link down and back, the capture,
// delete.
func msctlSystems(t *testing.T, pl *platform, spec model.SystemSpec) {
	m := newMsctl(t)
	cred := []string{"--server", pl.base, "--key", apiKey}
	ms := func(code int, stdin string, args ...string) msctlRun {
		t.Helper()
		return m.want(t, code, stdin, append(args, cred...)...)
	}
	file := filepath.Join(t.TempDir(), "pair.json")
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(ms(0, "", "systems", "create", file, "--poweron").stdout)
	var sys model.System
	if err := json.Unmarshal([]byte(ms(0, "", "systems", "get", id, "--output", "json").stdout), &sys); err != nil || sys.State != model.StateRunning || len(sys.Nodes) != 2 {
		t.Fatalf("systems get: %v %+v", err, sys)
	}
	gw := sys.Nodes[0].SessionID
	waitConsole(t, pl, gw, "rtt ")
	if r := ms(0, "", "systems", "ls"); !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "gw,sensor") {
		t.Fatalf("systems ls: %s", r.stdout)
	}
	if r := ms(0, "", "systems", "link", id, "link0", "--down"); !strings.Contains(r.stdout, "faults:  down") || !strings.Contains(r.stdout, "attached: true") {
		t.Fatalf("systems link --down: %s", r.stdout)
	}
	out, _, _ := pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "timeout ")
	if r := ms(0, "", "systems", "link", id, "link0", "--clean"); !strings.Contains(r.stdout, "faults:  clean") {
		t.Fatalf("systems link --clean: %s", r.stdout)
	}
	out, _, _ = pl.console(t, gw, 0)
	waitConsoleFrom(t, pl, gw, len(out), "rtt ")
	capture := filepath.Join(t.TempDir(), "link0.json")
	ms(0, "", "systems", "capture", id, "link0", "-o", capture)
	var c struct {
		Records []struct {
			From string `json:"from"`
			Data []byte `json:"data"`
		} `json:"records"`
	}
	data, _ := os.ReadFile(capture)
	if err := json.Unmarshal(data, &c); err != nil || len(c.Records) == 0 {
		t.Fatalf("capture: %v %.200s", err, data)
	}
	if r := ms(1, "", "systems", "link", id, "nope", "--down"); !strings.Contains(r.stderr, `has no link "nope"`) {
		t.Fatalf("unknown link: %s", r.stderr)
	}
	if r := ms(0, "", "systems", "poweroff", id); r.stdout != id+" stopped\n" {
		t.Fatalf("systems poweroff: %q", r.stdout)
	}
	ms(0, "", "systems", "rm", id)
	ms(1, "", "systems", "get", id)
	for _, n := range sys.Nodes {
		if pids := emulators(pl.socketDir + "/" + n.SessionID); len(pids) != 0 {
			t.Fatalf("QEMU of node %s left after msctl systems rm: %v", n.Name, pids)
		}
	}
}
