package host

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/runnerapi"
)

// fakeGuest is the fake machine's side a test drives: what its firmware
// sends on a port and what it took in, and its NIC.
type fakeGuest interface {
	Send(i int, s string)
	Received(i int) []byte
	NICGuest() net.Conn
}

// guestOf is the fake machine the session runs now.
func (g *rig) guestOf(t *testing.T, id string) fakeGuest {
	t.Helper()
	s, err := g.r.slot(id, false)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("session %s runs nothing", id)
	}
	m, ok := s.proc.m.(fakeGuest)
	if !ok {
		t.Fatalf("session %s runs a %T", id, s.proc.m)
	}
	return m
}

// eventually waits (bounded only against a hang) until ok holds.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

const linkID = "00000000000000a1"

// A link carries what one session's machine sends on a port to the other's
// and back; the sender's port history still shows it; down drops bytes and
// counts them; the capture records them; a power cycle of one end detaches
// the link and its next start attaches it again; deleting it stops it.
func TestLinkBetweenSessions(t *testing.T) {
	g := newRig(t, nil)
	g.fake.Quiet = []string{"uart1"} // no echo: it would bounce between the two for ever
	for _, id := range []string{"a", "b"} {
		g.session(t, id)
		g.start(t, id, "netduino2")
	}
	ends := [2]runnerapi.LinkEnd{{Session: "a", Port: "uart1"}, {Session: "b", Port: "uart1"}}
	l, err := g.r.PutLink(linkID, runnerapi.LinkRequest{Ends: ends, Seed: 7})
	if err != nil || !l.Attached || l.Attachments != 1 {
		t.Fatalf("put: %+v %v", l, err)
	}
	a, b := g.guestOf(t, "a"), g.guestOf(t, "b")
	received := func(m fakeGuest, want string) func() bool {
		return func() bool { return string(m.Received(1)) == want }
	}
	a.Send(1, "hello")
	eventually(t, "b takes a's hello", received(b, "hello"))
	b.Send(1, "back")
	eventually(t, "a takes b's answer", received(a, "back"))
	g.waitOutput(t, "a", "uart1", "hello")

	if _, err := g.r.SetLinkFaults(linkID, runnerapi.LinkFaults{Down: true}); err != nil {
		t.Fatal(err)
	}
	a.Send(1, "lost")
	eventually(t, "the down link drops 4 bytes", func() bool {
		l, _ := g.r.GetLink(linkID)
		return l.Directions[0].Dropped == 4
	})
	if _, err := g.r.SetLinkFaults(linkID, runnerapi.LinkFaults{}); err != nil {
		t.Fatal(err)
	}
	a.Send(1, "!")
	eventually(t, "b takes bytes again", received(b, "hello!"))
	c, err := g.r.LinkCapture(linkID, 0)
	var sent string
	for _, r := range c.Records {
		if r.From == "a:uart1" {
			sent += string(r.Data)
		}
	}
	if err != nil || sent != "hellolost!" || c.Next == 0 {
		t.Fatalf("capture from a: %q (%+v, %v)", sent, c, err)
	}

	// b's power cycle: detached while it is off, attached at its start.
	if err := g.r.Stop("b"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the link detaches", func() bool { l, _ := g.r.GetLink(linkID); return !l.Attached })
	g.start(t, "b", "netduino2")
	l, _ = g.r.GetLink(linkID)
	if !l.Attached || l.Attachments != 2 || l.Directions[0].Bytes != 10 {
		t.Fatalf("after b's restart: %+v", l)
	}
	b = g.guestOf(t, "b")
	a.Send(1, "again")
	eventually(t, "b's new machine takes a's bytes", received(b, "again"))

	if err := g.r.DeleteLink(linkID); err != nil {
		t.Fatal(err)
	}
	a.Send(1, "unlinked")
	g.waitOutput(t, "a", "uart1", "unlinked")
	time.Sleep(20 * time.Millisecond) // a byte still carried would arrive by now
	if got := string(b.Received(1)); got != "again" {
		t.Fatalf("after delete b took %q", got)
	}
	if _, err := g.r.GetLink(linkID); !isStatus(err, 404) {
		t.Fatalf("deleted link: %v", err)
	}
}

// Bad links are refused, saying why; through the runner API as a client
// sees them.
func TestLinkRefusals(t *testing.T) {
	g := newRig(t, nil)
	for _, id := range []string{"a", "b"} {
		g.session(t, id)
		g.start(t, id, "netduino2")
	}
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	c, err := runnerapi.NewClient(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	end := func(s, p string) runnerapi.LinkEnd { return runnerapi.LinkEnd{Session: s, Port: p} }
	good := runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart1"), end("b", "uart1")}}
	if _, err := c.PutLink(t.Context(), linkID, good); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutLink(t.Context(), linkID, good); err != nil {
		t.Fatalf("the same link again: %v", err)
	}
	for _, tc := range []struct {
		id   string
		req  runnerapi.LinkRequest
		code int
		says string
	}{
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart7"), end("b", "uart0")}}, 400, "its ports are uart0 (usart1), uart1 (usart2)"},
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("a", "uart0")}}, 400, "both ends are a:uart0"},
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("nosuch", "uart0")}}, 422, "session nosuch has no emulator slot"},
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("b", "uart1")}}, 409, "port b:uart1 is linked already (link 00000000000000a1)"},
		{linkID, runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("b", "uart0")}}, 409, "joins a:uart1 and b:uart1 already"},
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("b", "uart0")}, Faults: runnerapi.LinkFaults{Loss: 2}}, 400, "loss 2 is not a probability from 0 to 1"},
		{"00000000000000a2", runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{end("a", "uart0"), end("b", "uart0")}, Faults: runnerapi.LinkFaults{Delay: "soon"}}, 400, `faults.delay "soon" is not a duration`},
		{"../x", good, 400, "is not 16 lowercase hex digits"},
	} {
		_, err := c.PutLink(t.Context(), tc.id, tc.req)
		if !isStatus(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("put %s %+v: %v; want %d saying %q", tc.id, tc.req, err, tc.code, tc.says)
		}
	}
	if _, err := c.SetLinkFaults(t.Context(), linkID, runnerapi.LinkFaults{Delay: "1h"}); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("a delay of an hour: %v", err)
	}
	if _, err := c.GetLink(t.Context(), "00000000000000ff"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("unknown link: %v", err)
	}
	if err := c.DeleteLink(t.Context(), linkID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteLink(t.Context(), linkID); !isStatus(err, http.StatusNotFound) {
		t.Errorf("deleted twice: %v", err)
	}
}
