package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
)

// systemBody is a two-node mps2-an385 system joined by a UART link.
func systemBody(prog string) string {
	return fmt.Sprintf(`{"name":"pair","nodes":[{"name":"gw","board_config":{"board":"mps2-an385"},"program_id":%q},
{"name":"sensor","board_config":{"board":"mps2-an385"},"program_id":%q}],"links":[{"type":"uart","ends":["gw:uart1","sensor:uart1"]}]}`, prog, prog)
}

func createSystem(t *testing.T, a *api, tenant, body string) model.System {
	t.Helper()
	code, out := a.call(tenant, "POST", "/api/v1/systems", body)
	if code != 201 {
		t.Fatalf("create: %d %s", code, out)
	}
	var sys model.System
	if err := json.Unmarshal([]byte(out), &sys); err != nil {
		t.Fatal(err)
	}
	return sys
}

// Every system route answers tenant b as it answers an unknown id and
// never reaches the runner; a system cannot take another tenant's program.
func TestSystemTenantIsolation(t *testing.T) {
	h, st, f := setup(t)
	a := serve(t, h)
	p := putProgram(t, st, "a")
	sys := createSystem(t, a, "a", systemBody(p.ID))
	base := "/api/v1/systems/" + sys.ID
	routes := []struct{ method, path, body string }{
		{"GET", base, ""},
		{"POST", base + "/poweron", ""},
		{"POST", base + "/poweroff", ""},
		{"POST", base + "/reset", ""},
		{"GET", base + "/links/link0", ""},
		{"POST", base + "/links/link0", `{"down":true}`},
		{"GET", base + "/links/link0/capture", ""},
		{"DELETE", base, ""},
	}
	for _, r := range routes {
		before := f.count()
		code, body := a.call("b", r.method, r.path, r.body)
		if code != 404 || !strings.Contains(body, "system "+sys.ID+" not found") {
			t.Errorf("b: %s %s: %d %s", r.method, r.path, code, body)
		}
		if f.count() != before {
			t.Errorf("b: %s %s reached the runner: %s", r.method, r.path, f.last())
		}
	}
	if _, code := a.stream("b", base+"/links/link0/stream"); code != 404 {
		t.Errorf("b: link stream: %d", code)
	}
	if code, body := a.call("b", "POST", "/api/v1/systems", systemBody(p.ID)); code != 404 || !strings.Contains(body, "program "+p.ID+" not found") {
		t.Errorf("b's system with a's program: %d %s", code, body)
	}
	for tenant, want := range map[string]int{"a": 1, "b": 0} {
		var l session.Systems
		_, out := a.call(tenant, "GET", "/api/v1/systems", "")
		if json.Unmarshal([]byte(out), &l); l.Total != want || len(l.Systems) != want {
			t.Errorf("%s lists %s", tenant, out)
		}
	}
	// A node's session is the owner's, and goes only with its system.
	if code, body := a.call("a", "DELETE", "/api/v1/sessions/"+sys.Nodes[0].SessionID, ""); code != 409 || !strings.Contains(body, "delete the system") {
		t.Errorf("delete a node: %d %s", code, body)
	}
	if code, _ := a.call("a", "DELETE", base, ""); code != 204 {
		t.Fatalf("a's delete: %d", code)
	}
	for _, n := range sys.Nodes {
		if code, _ := a.call("a", "GET", "/api/v1/sessions/"+n.SessionID, ""); code != 404 {
			t.Errorf("node %s outlived its system", n.Name)
		}
	}
}

// A power on starts every node halted, puts the links, then resumes them
// all; a node that fails to start stops the ones started, and nothing
// else happens.
func TestSystemPowerOnAllOrNone(t *testing.T) {
	h, st, f := setup(t)
	a := serve(t, h)
	p := putProgram(t, st, "a")
	sys := createSystem(t, a, "a", systemBody(p.ID))
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID

	f.failOn = "/sessions/" + sensor + "/start"
	from := f.count()
	if code, body := a.call("a", "POST", "/api/v1/systems/"+sys.ID+"/poweron", ""); code != 429 || !strings.Contains(body, "node sensor") || !strings.Contains(body, "scripted failure") {
		t.Fatalf("poweron with a failing node: %d %s", code, body)
	}
	f.mu.Lock()
	calls := slices.Clone(f.calls[from:])
	f.mu.Unlock()
	// The nodes start in parallel; the one started is stopped after.
	want := []string{"POST /sessions/" + gw + "/start", "POST /sessions/" + sensor + "/start", "POST /sessions/" + gw + "/stop"}
	if len(calls) == 3 {
		slices.Sort(calls[:2])
		slices.Sort(want[:2])
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("runner calls %q, want %q", calls, want)
	}
	if _, out := a.call("a", "GET", "/api/v1/systems/"+sys.ID, ""); !strings.Contains(out, `"state": "created"`) {
		t.Fatalf("after a failed power on: %s", out)
	}

	f.failOn = ""
	st.UpdateSession(t.Context(), gw, func(s *model.Session) error { s.State = model.StateStopped; return nil })
	from = f.count()
	fromBodies := len(f.bodies)
	if code, body := a.call("a", "POST", "/api/v1/systems/"+sys.ID+"/poweron", ""); code != 200 || !strings.Contains(body, `"state": "running"`) {
		t.Fatalf("poweron: %d %s", code, body)
	}
	f.mu.Lock()
	calls, bodies := slices.Clone(f.calls[from:]), slices.Clone(f.bodies[fromBodies:])
	f.mu.Unlock()
	link := "PUT /links/" + sys.Links[0].RunnerLink
	if len(calls) != 5 || calls[2] != link || !slices.Contains(calls[3:], "POST /sessions/"+gw+"/resume") || !slices.Contains(calls[3:], "POST /sessions/"+sensor+"/resume") {
		t.Fatalf("runner calls %q", calls)
	}
	for _, b := range bodies[:2] {
		if !b.Halted {
			t.Fatalf("a node started running before its links were put: %+v", b)
		}
	}
	if code, _ := a.call("a", "POST", "/api/v1/systems/"+sys.ID+"/poweron", ""); code != 409 {
		t.Fatalf("second poweron: %d", code)
	}
}

// A system that cannot be created whole leaves nothing: not one node's
// session, nor its quota slot.
func TestSystemAllOrNothing(t *testing.T) {
	h, st, _ := setup(t)
	h.d.Quota = st.Quota(quota.Config{Sessions: 1, StorageBytes: 1 << 30, Jobs: 4})
	*h = *New(h.d)
	a := serve(t, h)
	p := putProgram(t, st, "a")
	if code, body := a.call("a", "POST", "/api/v1/systems", systemBody(p.ID)); code != 429 {
		t.Fatalf("over the session quota: %d %s", code, body)
	}
	if _, out := a.call("a", "GET", "/api/v1/sessions", ""); !strings.Contains(out, `"total": 0`) {
		t.Fatalf("sessions left: %s", out)
	}
	if u, err := h.d.Quota.Usage(t.Context(), "a"); err != nil || u.Sessions.Used != 0 {
		t.Fatalf("quota left taken: %+v %v", u, err)
	}
	// The fake runner holds 4 machines.
	nodes := []string{}
	for i := range 5 {
		nodes = append(nodes, fmt.Sprintf(`{"name":"n%d","board_config":{"board":"mps2-an385"},"program_id":%q}`, i, p.ID))
	}
	if code, body := a.call("a", "POST", "/api/v1/systems", `{"name":"big","nodes":[`+strings.Join(nodes, ",")+`]}`); code != 422 || !strings.Contains(body, "system_too_large") {
		t.Fatalf("5 nodes on a runner of 4: %d %s", code, body)
	}
}

// time "virtual" needs the instruction counter on every node's board, and
// every node then starts on it.
func TestSystemVirtualTime(t *testing.T) {
	h, st, f := setup(t)
	a := serve(t, h)
	p := putProgram(t, st, "a")
	virtual := strings.Replace(systemBody(p.ID), `"name":"pair",`, `"name":"pair","time":"virtual",`, 1)
	// The scripted runner's boards were not probed: none has the counter.
	if code, body := a.call("a", "POST", "/api/v1/systems", virtual); code != 422 || !strings.Contains(body, `node gw: time \"virtual\" needs the instruction counter`) {
		t.Fatalf("virtual time without the counter: %d %s", code, body)
	}
	r, err := st.Runner(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	r.Capabilities = board.Build("7.2.0", "qemu-system-arm", []string{"mps2-an385"}, []string{"cortex-m3"},
		map[string]board.Probe{"mps2-an385": {Clock: []string{board.FeatureDeterministic}}})
	if err := st.RegisterRunner(t.Context(), r, time.Minute); err != nil {
		t.Fatal(err)
	}
	sys := createSystem(t, a, "a", virtual)
	if sys.Time != model.TimeVirtual {
		t.Fatalf("time: %q", sys.Time)
	}
	from := len(f.bodies)
	if code, body := a.call("a", "POST", "/api/v1/systems/"+sys.ID+"/poweron", ""); code != 200 {
		t.Fatalf("poweron: %d %s", code, body)
	}
	starts := 0
	for _, b := range f.bodies[from:] {
		if b.Machine != "" {
			starts++
			if !b.VirtualTime || !b.Halted {
				t.Errorf("node started with %+v; want virtual time, halted", b)
			}
		}
	}
	if starts != 2 {
		t.Fatalf("%d starts", starts)
	}
}

// publishedSystems records the systems published with their types.
type publishedSystems struct {
	mu  sync.Mutex
	got map[string]model.System
}

func (p *publishedSystems) Publish(_ context.Context, typ, _ string, data any) error {
	if sys, ok := data.(model.System); ok {
		p.mu.Lock()
		p.got[typ] = sys
		p.mu.Unlock()
	}
	return nil
}

// A system's power events carry its nodes' states, as the answer does:
// a client following the events sees the nodes run and stop.
func TestSystemEventsCarryNodeStates(t *testing.T) {
	h, st, _ := setup(t)
	pub := &publishedSystems{got: map[string]model.System{}}
	h.d.Publisher = pub
	*h = *New(h.d)
	a := serve(t, h)
	sys := createSystem(t, a, "a", systemBody(putProgram(t, st, "a").ID))
	if code, body := a.call("a", "POST", "/api/v1/systems/"+sys.ID+"/poweron", ""); code != 200 {
		t.Fatalf("poweron: %d %s", code, body)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	started := pub.got[events.TypeSystemStarted]
	if len(started.Nodes) != 2 || started.Nodes[0].State != model.StateRunning || started.Nodes[1].State != model.StateRunning {
		t.Fatalf("system.started carries nodes %+v; want both running", started.Nodes)
	}
}
