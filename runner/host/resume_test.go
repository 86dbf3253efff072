package host

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/runnerapi"
)

// A machine started halted does not run (its guest has printed nothing)
// until it is resumed through the runner API; resuming it again is
// harmless; a session with no running machine is a 409 saying so.
func TestResumeHaltedStart(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	st, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Halted: true})
	if err != nil || !st.Running {
		t.Fatalf("halted start: %+v %v", st, err)
	}
	m := g.last(t)
	s, _ := g.r.slot("s1", false)
	if m.Running() || s.ring.End() != 0 {
		t.Fatalf("halted machine: running %v, %d console bytes", m.Running(), s.ring.End())
	}
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	c, err := runnerapi.NewClient(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	if !m.Running() {
		t.Fatal("the resumed machine does not run")
	}
	banner := "MS-TEST-FW netduino2 ready\r\n"
	g.waitOutput(t, "s1", "", banner)
	if err := c.Resume(t.Context(), "s1"); err != nil {
		t.Fatalf("resume of a running machine: %v", err)
	}
	// The same machine runs on: not booted again, no second banner.
	if err := g.r.Input("s1", "", []byte("count\r")); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "s1", "", "count=1")
	data, _, _ := s.ring.Read(0, 0)
	if !m.Running() || g.last(t) != m || strings.Count(string(data), banner) != 1 {
		t.Fatalf("after a second resume: running %v, console %q", m.Running(), data)
	}
	if err := c.Stop(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "nosuch"} {
		err := c.Resume(t.Context(), id)
		if !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "session "+id+" is not running") {
			t.Errorf("resume of %s: %v; want a 409 saying it is not running", id, err)
		}
	}
}
