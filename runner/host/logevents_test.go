package host

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/model"
)

// tenantEvents records the runner's events with the tenant they are
// published for.
type tenantEvents struct {
	mu  sync.Mutex
	got []tenantEvent
}

type tenantEvent struct {
	typ, tenant string
	data        any
}

func (p *tenantEvents) Publish(ctx context.Context, typ, _ string, data any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, tenantEvent{typ, events.TenantOf(ctx), data})
	return nil
}

// wait returns the first event of typ and its index, waiting (bounded
// only against a hang) until it is published.
func (p *tenantEvents) wait(t *testing.T, typ string) (tenantEvent, int) {
	t.Helper()
	for range 1000 {
		p.mu.Lock()
		i := slices.IndexFunc(p.got, func(e tenantEvent) bool { return e.typ == typ })
		var e tenantEvent
		if i >= 0 {
			e = p.got[i]
		}
		p.mu.Unlock()
		if i >= 0 {
			return e, i
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s event", typ)
	return tenantEvent{}, 0
}

// The runner's log lines of a session are events of the session's tenant:
// the emulator starting and ending with its typed exit, a debugger
// attaching and detaching; and its state changes carry the tenant too.
func TestLogLineEvents(t *testing.T) {
	g := newRig(t, nil)
	rec := &tenantEvents{}
	g.r.pub = rec
	const id = "logs"
	if err := g.st.CreateSession(t.Context(), model.Session{ID: id, Tenant: "acme", Machine: "netduino2", State: model.StateStopped, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st := g.start(t, id, "netduino2")
	g.waitOutput(t, id, "", "ready")
	e, _ := rec.wait(t, events.TypeEmulatorStarted)
	if d, ok := e.data.(events.EmulatorStarted); !ok || e.tenant != "acme" || d != (events.EmulatorStarted{SessionID: id, RunnerID: "r1", Machine: "netduino2"}) {
		t.Errorf("emulator.started: %+v", e)
	}

	c, err := net.Dial("tcp", st.GDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("$?#3f")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	att, ai := rec.wait(t, events.TypeDebuggerAttached)
	det, di := rec.wait(t, events.TypeDebuggerDetached)
	a, _ := att.data.(events.Debugger)
	d, _ := det.data.(events.Debugger)
	if att.tenant != "acme" || det.tenant != "acme" || a.SessionID != id || a.Who == "" || a.EndedBy != "" || d.Who != a.Who || !d.Since.Equal(a.Since) || d.EndedBy != "debugger" || ai > di {
		t.Errorf("debugger events: %+v then %+v", att, det)
	}

	if err := g.r.Input(id, "", []byte("exit 3\r")); err != nil {
		t.Fatal(err)
	}
	end, ei := rec.wait(t, events.TypeEmulatorEnded)
	want := events.EmulatorEnded{SessionID: id, RunnerID: "r1", Exit: model.Exit{Kind: "status", Code: 3}, Reason: "firmware exited with status 3", State: model.StateError}
	if ed, ok := end.data.(events.EmulatorEnded); !ok || end.tenant != "acme" || ed != want {
		t.Errorf("emulator.ended: %+v, want %+v", end, want)
	}
	failed, fi := rec.wait(t, events.TypeSessionFailed)
	if failed.tenant != "acme" || fi < ei {
		t.Errorf("session.failed: tenant %q at %d, emulator.ended at %d", failed.tenant, fi, ei)
	}

	// Powered on again and off: the end the runner asked for is a stop.
	g.start(t, id, "netduino2")
	if err := g.r.Stop(id); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	last := rec.got[len(rec.got)-2:]
	rec.mu.Unlock()
	if ed, ok := last[0].data.(events.EmulatorEnded); !ok || ed.Exit != (model.Exit{Kind: "stopped"}) || ed.State != model.StateStopped || ed.Reason != "stopped on request" || last[1].typ != events.TypeSessionStopped {
		t.Errorf("after a power off: %+v", last)
	}
}
