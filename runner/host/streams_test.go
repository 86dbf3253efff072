package host

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// streamClient reads a link's or a segment's stream and checks its
// numbering as it goes: every record follows the one before it, or the
// gap reported before it, so nothing is missing or repeated unsaid.
type streamClient struct {
	c    *websocket.Conn
	next uint64
	gaps []runnerapi.StreamGap
}

func streamURL(srv *httptest.Server, path string, after uint64) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + runnerapi.Prefix + path + "?after=" + strconv.FormatUint(after, 10)
}

func dialStream(t *testing.T, srv *httptest.Server, path string, after uint64) *streamClient {
	t.Helper()
	return dialURL(t, streamURL(srv, path, after), after)
}

func dialURL(t *testing.T, url string, after uint64) *streamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	// A frame's record is up to twice a 69 KB frame, in base64.
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &streamClient{c: c, next: after}
}

// read is the next record's JSON, bounded only against a hang.
func (s *streamClient) read(t *testing.T) []byte {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		typ, b, err := s.c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("stream read (after record %d): %v", s.next, err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("a %v message", typ)
		}
		var m struct {
			Seq    *uint64 `json:"seq"`
			Missed *uint64 `json:"missed"`
			First  uint64  `json:"first"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %s: %v", b, err)
		}
		switch {
		case m.Missed != nil:
			if m.First != s.next+1 || *m.Missed == 0 {
				t.Fatalf("gap %s after record %d", b, s.next)
			}
			s.gaps = append(s.gaps, runnerapi.StreamGap{First: m.First, Missed: *m.Missed})
			s.next += *m.Missed
		case m.Seq != nil:
			if *m.Seq != s.next+1 {
				t.Fatalf("record %d after record %d: %s", *m.Seq, s.next, b)
			}
			s.next = *m.Seq
			return b
		default:
			t.Fatalf("message %s is neither a record nor a gap", b)
		}
	}
}

func (s *streamClient) link(t *testing.T) runnerapi.LinkRecord {
	t.Helper()
	var r runnerapi.LinkRecord
	if err := json.Unmarshal(s.read(t), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (s *streamClient) frame(t *testing.T) runnerapi.FrameRecord {
	t.Helper()
	var r runnerapi.FrameRecord
	if err := json.Unmarshal(s.read(t), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// until reads link records until from's bytes so far end with want (a
// UART's bytes may come in several records); the records are returned.
func (s *streamClient) until(t *testing.T, sent map[string]string, from, want string) []runnerapi.LinkRecord {
	t.Helper()
	var recs []runnerapi.LinkRecord
	for !strings.HasSuffix(sent[from], want) {
		r := s.link(t)
		sent[r.From] += string(r.Data)
		recs = append(recs, r)
	}
	return recs
}

// closed reads until the stream ends and returns how it was closed.
func (s *streamClient) closed(t *testing.T) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		_, b, err := s.c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatal("the stream did not end")
			}
			return websocket.CloseStatus(err)
		}
		t.Logf("before the close: %s", b)
	}
}

// goroutines is how many goroutines run, the plain requests' kept-alive
// connections let go first (their going would hide a stream's staying).
func goroutines() int {
	http.DefaultClient.CloseIdleConnections()
	return runtime.NumGoroutine()
}

// linkStreams counts the link streams being served.
func linkStreams() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "host.(*Runner).streamLink(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutinesBackTo waits (bounded only against a hang) until no more
// goroutines run than base, and dumps them if some stay.
func goroutinesBackTo(t *testing.T, base int) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n = goroutines(); n <= base {
			return
		}
	}
	pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
	t.Fatalf("%d goroutines, %d before", n, base)
}

// A link's stream sends what crosses the link both ways as it crosses;
// ?after= replays the kept records after it first; the stream follows the
// link across a power cycle (its numbering too, as the capture's), says
// which records an attachment it joined late let go, and ends normally
// when the link is deleted, leaving no goroutine behind; a client that
// goes away ends its stream. Unknown links and bad after= are answered
// before the upgrade.
func TestLinkStream(t *testing.T) {
	g := newRig(t, nil)
	g.fake.Quiet = []string{"uart1"}
	for _, id := range []string{"a", "b"} {
		g.session(t, id)
		g.start(t, id, "netduino2")
	}
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	base := goroutines()
	ends := [2]runnerapi.LinkEnd{{Session: "a", Port: "uart1"}, {Session: "b", Port: "uart1"}}
	if _, err := g.r.PutLink(linkID, runnerapi.LinkRequest{Ends: ends}); err != nil {
		t.Fatal(err)
	}
	path := runnerapi.LinkStreamPath(linkID)
	for _, tc := range []struct {
		path string
		q    string
		code int
		says string
	}{
		{runnerapi.LinkStreamPath("00000000000000ff"), "", 404, "link 00000000000000ff not found"},
		{path, "?after=x", 400, `after must be a record number; got \"x\"`},
	} {
		resp, err := http.Get(srv.URL + runnerapi.Prefix + tc.path + tc.q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), tc.says) {
			t.Errorf("GET %s%s: %d %s %s; want %d saying %q", tc.path, tc.q, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.code, tc.says)
		}
	}
	a, b := g.guestOf(t, "a"), g.guestOf(t, "b")
	received := func(m fakeGuest, want string) func() bool {
		return func() bool { return string(m.Received(1)) == want }
	}
	a.Send(1, "one")
	eventually(t, "b takes one", received(b, "one"))

	// From the first record kept: what crossed before the stream began,
	// then both directions live.
	s := dialStream(t, srv, path, 0)
	sent := map[string]string{}
	s.until(t, sent, "a:uart1", "one")
	b.Send(1, "two")
	recs := s.until(t, sent, "b:uart1", "two")
	if r := recs[0]; r.To != "a:uart1" || r.Time.IsZero() {
		t.Fatalf("b's record: %+v", r)
	}
	a.Send(1, "three")
	s.until(t, sent, "a:uart1", "onethree")
	if sent["b:uart1"] != "two" {
		t.Fatalf("sent %q", sent)
	}
	att1 := s.next

	// after= replays what was kept after it: b's two, then a's three.
	// Through a runner client's proxy, as the sessions function serves
	// the stream: the query goes through.
	rc, err := runnerapi.NewClient(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rc.Proxy(path))
	r := dialURL(t, "ws"+strings.TrimPrefix(front.URL, "http")+"/api/v1/links/x/stream?after=1", 1)
	replayed := map[string]string{}
	r.until(t, replayed, "a:uart1", "three")
	if replayed["b:uart1"] != "two" || r.next != att1 {
		t.Fatalf("replay after 1: %q, to record %d of %d", replayed, r.next, att1)
	}
	r.c.Close(websocket.StatusNormalClosure, "")
	front.Close()

	// b's power cycle (a restart: its new machine runs before the link
	// has let go of the old one): the link attaches to the new one all
	// the same, and the stream carries on with the next number.
	g.restart(t, "b")
	b = g.guestOf(t, "b")
	eventually(t, "the link attaches again", func() bool { l, _ := g.r.GetLink(linkID); return l.Attached && l.Attachments == 2 })
	a.Send(1, "four")
	eventually(t, "b's new machine takes four", received(b, "four"))
	recs = s.until(t, sent, "a:uart1", "four")
	if recs[0].Seq != att1+1 || len(s.gaps) != 0 {
		t.Fatalf("after the power cycle: first record %d (att1 ended at %d), gaps %v", recs[0].Seq, att1, s.gaps)
	}
	// The capture numbers as the stream does.
	c, err := g.r.LinkCapture(linkID, att1)
	if err != nil || len(c.Records) != len(recs) || c.Records[0].Seq != att1+1 || c.Next != s.next {
		t.Fatalf("capture after %d: %+v %v; the stream is at %d", att1, c, err, s.next)
	}

	// A stream from the start: the first attachment's records are not
	// kept any more, and it says so.
	late := dialStream(t, srv, path, 0)
	late.until(t, map[string]string{}, "a:uart1", "four")
	if len(late.gaps) != 1 || late.gaps[0] != (runnerapi.StreamGap{First: 1, Missed: att1}) {
		t.Fatalf("gaps of a stream from 0 after the power cycle: %v, want the %d records of the first attachment", late.gaps, att1)
	}
	// A client that goes away ends its stream (s's is the one left).
	late.c.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the stream of a client gone ends", func() bool { return linkStreams() == 1 })

	b.Send(1, "five")
	s.until(t, sent, "b:uart1", "five")
	if err := g.r.DeleteLink(linkID); err != nil {
		t.Fatal(err)
	}
	if code := s.closed(t); code != websocket.StatusNormalClosure {
		t.Fatalf("stream closed with %v after the delete", code)
	}
	s.c.CloseNow()
	goroutinesBackTo(t, base)
}

// restart power cycles a session's machine in one call, as a reset by
// restart does: the old machine's end and the new one's start are
// microseconds apart.
func (g *rig) restart(t *testing.T, id string) {
	t.Helper()
	if _, err := g.r.Start(t.Context(), id, runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Restart: true}); err != nil {
		t.Fatal(err)
	}
}

// A link attaches to an end's new machine however soon after the old
// one's end it starts: the attachment that ends attaches the pair again
// if its start found the link still attached.
func TestLinkReattachesAfterRestarts(t *testing.T) {
	g := newRig(t, nil)
	g.fake.Quiet = []string{"uart1"}
	for _, id := range []string{"a", "b"} {
		g.session(t, id)
		g.start(t, id, "netduino2")
	}
	ends := [2]runnerapi.LinkEnd{{Session: "a", Port: "uart1"}, {Session: "b", Port: "uart1"}}
	if _, err := g.r.PutLink(linkID, runnerapi.LinkRequest{Ends: ends}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		g.restart(t, []string{"a", "b"}[i%2])
		eventually(t, "the link attaches to the new machine", func() bool {
			l, _ := g.r.GetLink(linkID)
			return l.Attached && l.Attachments == i+2
		})
	}
	want := ""
	for i := range 3 {
		msg := strconv.Itoa(i)
		g.guestOf(t, "a").Send(1, msg)
		want += msg
		eventually(t, "b takes a's bytes", func() bool { return string(g.guestOf(t, "b").Received(1)) == want })
	}
}

// A stream of a link that is not attached yet waits for its first
// attachment, and one of a link deleted unattached ends.
func TestLinkStreamBeforeAttachment(t *testing.T) {
	g := newRig(t, nil)
	g.fake.Quiet = []string{"uart1"}
	for _, id := range []string{"a", "b"} {
		g.session(t, id)
	}
	g.start(t, "a", "netduino2")
	// b has a slot (so the link can name it) but no machine.
	g.start(t, "b", "netduino2")
	if err := g.r.Stop("b"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	ends := [2]runnerapi.LinkEnd{{Session: "a", Port: "uart1"}, {Session: "b", Port: "uart1"}}
	if _, err := g.r.PutLink(linkID, runnerapi.LinkRequest{Ends: ends}); err != nil {
		t.Fatal(err)
	}
	s := dialStream(t, srv, runnerapi.LinkStreamPath(linkID), 0)
	g.start(t, "b", "netduino2")
	g.guestOf(t, "a").Send(1, "hi")
	s.until(t, map[string]string{}, "a:uart1", "hi")

	const other = "00000000000000a2"
	ends = [2]runnerapi.LinkEnd{{Session: "a", Port: "uart0"}, {Session: "c", Port: "uart0"}}
	g.session(t, "c")
	g.start(t, "c", "netduino2")
	if err := g.r.Stop("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.r.PutLink(other, runnerapi.LinkRequest{Ends: ends}); err != nil {
		t.Fatal(err)
	}
	o := dialStream(t, srv, runnerapi.LinkStreamPath(other), 0)
	if err := g.r.DeleteLink(other); err != nil {
		t.Fatal(err)
	}
	if code := o.closed(t); code != websocket.StatusNormalClosure {
		t.Fatalf("stream of a link deleted unattached closed with %v", code)
	}
}

// A segment's stream sends every frame a member sends, with where it went
// and what the faults did, as the switch takes it; ?after= replays; it
// carries on across a member's power cycle and ends normally when the
// segment is deleted, leaving no goroutine behind.
func TestSegmentStream(t *testing.T) {
	g := newRig(t, nil)
	for i, id := range []string{"a", "b"} {
		g.session(t, id)
		g.startNIC(t, id, byte(i+1))
	}
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	base := goroutines()
	resp, err := http.Get(srv.URL + runnerapi.Prefix + runnerapi.SegmentStreamPath("00000000000000ff"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown segment: %d", resp.StatusCode)
	}
	if _, err := g.r.PutSegment(segID, runnerapi.SegmentRequest{Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	path := runnerapi.SegmentStreamPath(segID)
	a, b := g.nicGuest(t, "a"), g.nicGuest(t, "b")
	a.Write(frame(0xff, 1, "hello"))
	if got := readFrame(t, b); got != "hello" {
		t.Fatalf("b took %q", got)
	}
	payload := func(f runnerapi.FrameRecord) string { return strings.TrimRight(string(f.Data[14:]), "\x00") }

	s := dialStream(t, srv, path, 0)
	f := s.frame(t)
	if f.Seq != 1 || f.From != "a" || len(f.To) != 1 || f.To[0] != "b" || f.Length != 60 || payload(f) != "hello" || f.Dropped || f.Time.IsZero() {
		t.Fatalf("a's broadcast: %+v", f)
	}
	b.Write(frame(1, 2, "back"))
	if got := readFrame(t, a); got != "back" {
		t.Fatalf("a took %q", got)
	}
	if f := s.frame(t); f.From != "b" || len(f.To) != 1 || f.To[0] != "a" || payload(f) != "back" {
		t.Fatalf("b's reply: %+v", f)
	}

	r := dialStream(t, srv, path, 1)
	if f := r.frame(t); f.Seq != 2 || payload(f) != "back" {
		t.Fatalf("replay after 1: %+v", f)
	}
	r.c.Close(websocket.StatusNormalClosure, "")

	if _, err := g.r.SetSegmentFaults(segID, runnerapi.LinkFaults{Down: true}); err != nil {
		t.Fatal(err)
	}
	a.Write(frame(2, 1, "lost"))
	if f := s.frame(t); !f.Dropped || !f.Down || f.Runt || len(f.To) != 0 || payload(f) != "lost" {
		t.Fatalf("a frame the down segment dropped: %+v", f)
	}
	if _, err := g.r.SetSegmentFaults(segID, runnerapi.LinkFaults{}); err != nil {
		t.Fatal(err)
	}
	runt := binary.BigEndian.AppendUint32(nil, 10)
	a.Write(append(runt, bytes.Repeat([]byte{2}, 10)...))
	if f := s.frame(t); !f.Dropped || f.Down || !f.Runt || f.Length != 10 || len(f.To) != 0 {
		t.Fatalf("a runt: %+v", f)
	}

	if err := g.r.Stop("b"); err != nil {
		t.Fatal(err)
	}
	g.startNIC(t, "b", 2)
	b = g.nicGuest(t, "b")
	a.Write(frame(2, 1, "again"))
	if got := readFrame(t, b); got != "again" {
		t.Fatalf("b's new machine took %q", got)
	}
	if f := s.frame(t); f.From != "a" || len(f.To) != 1 || f.To[0] != "b" || payload(f) != "again" || len(s.gaps) != 0 {
		t.Fatalf("after b's power cycle: %+v, gaps %v", f, s.gaps)
	}

	if err := g.r.DeleteSegment(segID); err != nil {
		t.Fatal(err)
	}
	if code := s.closed(t); code != websocket.StatusNormalClosure {
		t.Fatalf("stream closed with %v after the delete", code)
	}
	s.c.CloseNow()
	goroutinesBackTo(t, base)
}

// A stream whose client reads slower than records are made loses only
// what the capture let go before the stream read it, and says how many in
// gaps: every record is either sent or counted, in order, none twice.
func TestStreamReportsWhatTheCaptureLetGo(t *testing.T) {
	// A capture of two or three big frames, a client that reads nothing
	// until far more than the socket buffers hold has been made.
	const frames, size = 600, 60000
	sw, err := link.NewSwitch(link.SwitchOptions{CaptureBytes: 3 * size})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, s, ok := acceptStream(w, req, func(seq uint64, rec link.Record) any { return frameRecord(seq, rec) })
		if !ok {
			return
		}
		defer s.c.CloseNow()
		if s.follow(ctx, sw, 0) == nil {
			s.c.Close(websocket.StatusNormalClosure, "switch closed")
		}
	}))
	defer srv.Close()
	s := dialStream(t, srv, "", 0)
	port, guest := net.Pipe()
	if err := sw.AddPort("p", port); err != nil {
		t.Fatal(err)
	}
	for i := range frames {
		f := make([]byte, 4+size)
		binary.BigEndian.PutUint32(f, size)
		copy(f[4:], bytes.Repeat([]byte{0xff}, 6))
		binary.BigEndian.PutUint32(f[20:], uint32(i+1))
		if _, err := guest.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the switch records every frame", func() bool { return sw.Stats().Records == frames })
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	sent := 0
	for s.next < frames {
		f := s.frame(t)
		if n := binary.BigEndian.Uint32(f.Data[16:]); uint64(n) != f.Seq || f.Length != size {
			t.Fatalf("record %d holds frame %d of %d bytes", f.Seq, n, f.Length)
		}
		sent++
	}
	var missed uint64
	for _, g := range s.gaps {
		missed += g.Missed
	}
	if len(s.gaps) == 0 || uint64(sent)+missed != frames {
		t.Fatalf("%d records sent, %d in %d gaps, of %d", sent, missed, len(s.gaps), frames)
	}
	t.Logf("%d of %d records sent, %d lost in %d gaps", sent, frames, missed, len(s.gaps))
	if code := s.closed(t); code != websocket.StatusNormalClosure {
		t.Fatalf("closed with %v", code)
	}
	guest.Close()
	port.Close()
}
