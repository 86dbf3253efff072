package eventstream

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
	"github.com/machineserver/machineserver/shared/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// rig is the stream over a real Redis (or the embedded one) behind a
// stand-in for the authenticating middleware: X-Tenant names the caller's
// tenant. Events are published the way every component does, through a
// Tee appending to the store.
type rig struct {
	st       *state.Store
	srv      *httptest.Server
	tee      *events.Tee
	draining chan struct{}
}

func newRig(t *testing.T, st *state.Store, maxLen int64) *rig {
	g := &rig{st: st, draining: make(chan struct{})}
	s := New(st, quiet)
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := auth.Principal{Actor: "test", Tenant: r.Header.Get("X-Tenant"), Scopes: []auth.Scope{auth.ScopeRead}}
		s.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	}))
	g.srv.Config.BaseContext = func(net.Listener) context.Context { return httpapi.WithDrain(context.Background(), g.draining) }
	g.srv.Start()
	t.Cleanup(g.srv.Close)
	g.tee = events.NewTee(events.Nop, events.SourceSessions, func(ctx context.Context, tenant string, e []byte) error {
		_, err := st.AppendEvent(ctx, tenant, e, maxLen)
		return err
	}, quiet)
	return g
}

// store is a real redis-server (the embedded one runs the same code: the
// state tests cover both, the standalone e2e tests the stream on it).
func store(t *testing.T) *state.Store {
	st, err := state.Open(context.Background(), testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// publish publishes a session event of tenant and waits until it is in the
// stream (the Tee appends asynchronously), returning its stream id.
func (g *rig) publish(t *testing.T, tenant, typ string, s model.Session) string {
	t.Helper()
	ctx := context.Background()
	_, before, err := g.st.EventBounds(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.tee.Publish(events.WithTenant(ctx, tenant), typ, s.ID, s); err != nil {
		t.Fatal(err)
	}
	if before == "" {
		before = "0-0"
	}
	for range 500 {
		es, err := g.st.EventsAfter(ctx, tenant, before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			var got cloudevents.Event
			if json.Unmarshal(e.Event, &got) == nil && got.Type() == typ && got.Subject() == s.ID {
				return e.ID
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("event %s of %s never reached the stream", typ, tenant)
	return ""
}

func session(id string, st model.State) model.Session {
	return model.Session{ID: id, Name: "s", Backend: "qemu", Machine: "netduino2", State: st}
}

func (g *rig) dial(t *testing.T, tenant, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.srv.URL, "http")+"/?"+query, &websocket.DialOptions{HTTPHeader: http.Header{"X-Tenant": {tenant}}})
	if err != nil {
		t.Fatalf("dial %s: %v", query, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// next reads one event from a WebSocket client.
func next(t *testing.T, c *websocket.Conn) cloudevents.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e cloudevents.Event
	if typ != websocket.MessageText || json.Unmarshal(b, &e) != nil || e.Validate() != nil {
		t.Fatalf("message %v %s is not a CloudEvent", typ, b)
	}
	return e
}

func streamIDOf(e cloudevents.Event) string {
	s, _ := e.Extensions()[events.StreamIDExtension].(string)
	return s
}

func TestStreamWebSocket(t *testing.T) {
	g := newRig(t, store(t), 1000)
	old := g.publish(t, "acme", events.TypeSessionCreated, session("00000000000000a0", model.StateCreated))
	all := g.dial(t, "acme", "")
	one := g.dial(t, "acme", "session=00000000000000a2&types=io.machineserver.session.started.,io.machineserver.session.stopped.")
	other := g.dial(t, "globex", "")

	// Connected before these: each client gets its tenant's, live,
	// in order, each with its stream id; the event before the
	// connection is not sent again.
	var ids []string
	for _, c := range []struct {
		tenant, typ, id string
	}{
		{"acme", events.TypeSessionStarted, "00000000000000a1"},
		{"globex", events.TypeSessionStarted, "00000000000000b1"},
		{"acme", events.TypeSessionStarted, "00000000000000a2"},
		{"acme", events.TypeSessionStopped, "00000000000000a2"},
		{"acme", events.TypeSessionDeleted, "00000000000000a2"},
	} {
		id := g.publish(t, c.tenant, c.typ, session(c.id, model.StateRunning))
		if c.tenant == "acme" {
			ids = append(ids, id)
		}
	}
	for i, want := range []string{"00000000000000a1", "00000000000000a2", "00000000000000a2", "00000000000000a2"} {
		e := next(t, all)
		if e.Subject() != want || streamIDOf(e) != ids[i] || e.Extensions()[events.TenantExtension] != "acme" {
			t.Errorf("event %d: subject %s streamid %s tenant %v, want %s %s acme", i, e.Subject(), streamIDOf(e), e.Extensions()[events.TenantExtension], want, ids[i])
		}
		var s model.Session
		if err := e.DataAs(&s); err != nil || s.ID != want {
			t.Errorf("event %d data: %v %v", i, s, err)
		}
	}
	for _, want := range []string{events.TypeSessionStarted, events.TypeSessionStopped} {
		if e := next(t, one); e.Type() != want || e.Subject() != "00000000000000a2" {
			t.Errorf("filtered client got %s about %s, want %s", e.Type(), e.Subject(), want)
		}
	}
	if e := next(t, other); e.Subject() != "00000000000000b1" || e.Extensions()[events.TenantExtension] != "globex" {
		t.Errorf("globex got %s of tenant %v", e.Subject(), e.Extensions()[events.TenantExtension])
	}

	// Resuming after an event replays what followed it, then goes
	// on live.
	again := g.dial(t, "acme", "after="+ids[1])
	for _, want := range ids[2:] {
		if e := next(t, again); streamIDOf(e) != want {
			t.Errorf("resumed: streamid %s, want %s", streamIDOf(e), want)
		}
	}
	live := g.publish(t, "acme", events.TypeSessionCreated, session("00000000000000a3", model.StateCreated))
	if e := next(t, again); streamIDOf(e) != live {
		t.Errorf("resumed then live: streamid %s, want %s", streamIDOf(e), live)
	}
	// after=0 replays everything kept, the oldest first.
	if e := next(t, g.dial(t, "acme", "after=0")); streamIDOf(e) != old {
		t.Errorf("after=0: first streamid %s, want %s", streamIDOf(e), old)
	}
	// Nothing of acme ever reached globex: its next event is its own next.
	mark := g.publish(t, "globex", events.TypeSessionDeleted, session("00000000000000b1", model.StateStopped))
	if e := next(t, other); streamIDOf(e) != mark {
		t.Errorf("globex got %s about %s, want its own %s", e.Type(), e.Subject(), mark)
	}
}

// sseClient reads server-sent events.
type sseClient struct {
	r    *bufio.Reader
	body io.Closer
}

type sseEvent struct {
	id, event, data, comment string
}

func (g *rig) sse(t *testing.T, tenant, query, lastEventID string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest("GET", g.srv.URL+"/?"+query, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Tenant", tenant)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("SSE: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	c := &sseClient{r: bufio.NewReader(resp.Body), body: resp.Body}
	if ev, err := c.read(); err != nil || ev != (sseEvent{comment: "subscribed"}) {
		t.Fatalf("SSE: first block %+v %v, want the subscribed comment", ev, err)
	}
	return c
}

// read returns the next block: an event or a comment.
func (c *sseClient) read() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev, nil
		}
		if c, ok := strings.CutPrefix(line, ": "); ok {
			ev.comment = c
			continue
		}
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "id":
			ev.id = v
		case "event":
			ev.event = v
		case "data":
			ev.data = v
		}
	}
}

func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	for {
		ev, err := c.read()
		if err != nil {
			t.Fatalf("SSE read: %v", err)
		}
		if ev.event != "" {
			return ev
		}
	}
}

func TestStreamServerSentEvents(t *testing.T) {
	g := newRig(t, store(t), 1000)
	c := g.sse(t, "acme", "types=io.machineserver.session.", "")
	first := g.publish(t, "acme", events.TypeSessionCreated, session("00000000000000a1", model.StateCreated))
	second := g.publish(t, "acme", events.TypeSessionStarted, session("00000000000000a1", model.StateRunning))
	for _, want := range []struct{ id, typ string }{{first, events.TypeSessionCreated}, {second, events.TypeSessionStarted}} {
		ev := c.next(t)
		var e cloudevents.Event
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			t.Fatalf("data %q: %v", ev.data, err)
		}
		if ev.id != want.id || ev.event != want.typ || e.Type() != want.typ || streamIDOf(e) != want.id {
			t.Errorf("SSE event %+v, want id %s type %s", ev, want.id, want.typ)
		}
	}
	// An EventSource reconnecting sends Last-Event-ID with its first URL;
	// the header wins over ?after=.
	again := g.sse(t, "acme", "after=0", first)
	if ev := again.next(t); ev.id != second {
		t.Errorf("Last-Event-ID %s: next id %s, want %s", first, ev.id, second)
	}
	// A shutting-down server ends the stream, saying where to resume.
	close(g.draining)
	for _, cl := range []*sseClient{c, again} {
		ev, err := cl.read()
		if err != nil || ev.comment != "server shutting down; reconnect with Last-Event-ID "+second {
			t.Errorf("draining: %+v %v", ev, err)
		}
		if _, err := cl.read(); err != io.EOF {
			t.Errorf("draining: the stream goes on: %v", err)
		}
	}
}

// A resume point older than the stream keeps gets a gap notice, with no
// stream id, then everything kept from the oldest.
func TestStreamGap(t *testing.T) {
	st := store(t)
	g := newRig(t, st, 10)
	ctx := events.WithTenant(context.Background(), "acme")
	first := g.publish(t, "acme", events.TypeSessionCreated, session("00000000000000a0", model.StateCreated))
	for i := range 299 {
		if err := g.tee.Publish(ctx, events.TypeSessionCreated, "s", session(fmt.Sprintf("%016x", i+1), model.StateCreated)); err != nil {
			t.Fatal(err)
		}
	}
	last := g.publish(t, "acme", events.TypeSessionStarted, session("00000000000000a0", model.StateRunning))
	oldest, _, err := st.EventBounds(context.Background(), "acme")
	if err != nil || oldest == first {
		t.Fatalf("the stream was not trimmed: oldest %s (%v)", oldest, err)
	}
	c := g.dial(t, "acme", "after="+first)
	gap := next(t, c)
	var d events.StreamGap
	if err := gap.DataAs(&d); err != nil || gap.Type() != events.TypeStreamGap || streamIDOf(gap) != "" || d.After != first || d.Oldest != oldest || d.Message == "" {
		t.Fatalf("first message %s %s, want a gap notice after %s with oldest %s", gap.Type(), gap.Data(), first, oldest)
	}
	if e := next(t, c); streamIDOf(e) != oldest {
		t.Errorf("after the notice: streamid %s, want the oldest %s", streamIDOf(e), oldest)
	}
	// A resume point that is still kept gets no notice.
	if e := next(t, g.dial(t, "acme", "after="+oldest)); e.Type() == events.TypeStreamGap {
		t.Errorf("a kept resume point got a gap notice")
	}
	// The other tenant's stream is empty: any resume point there is a gap.
	if e := next(t, g.dial(t, "globex", "after="+last)); e.Type() != events.TypeStreamGap {
		t.Errorf("resuming an empty stream: %s, want a gap notice", e.Type())
	}
}

func TestStreamRefusesBadRequests(t *testing.T) {
	g := newRig(t, store(t), 10)
	for _, c := range []struct {
		query, accept string
		status        int
		says          string
	}{
		{"session=nope", "text/event-stream", 400, "session must be a session id"},
		{"job=0123", "text/event-stream", 400, "job must be a job id"},
		{"types=io.machineserver.sesion.", "text/event-stream", 400, "no event type starts with"},
		{"after=yesterday", "text/event-stream", 400, "after must be a stream id"},
		{"tenant=globex", "text/event-stream", 400, `unknown parameter "tenant"`},
		{"", "application/json", 406, "Accept: text/event-stream"},
	} {
		req, _ := http.NewRequest("GET", g.srv.URL+"/?"+c.query, nil)
		req.Header.Set("Accept", c.accept)
		req.Header.Set("X-Tenant", "acme")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if resp.StatusCode != c.status || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error.Message, c.says) {
			t.Errorf("%q: %d %s, want %d saying %q", c.query, resp.StatusCode, b, c.status, c.says)
		}
	}
	// A WebSocket gets the same 400 before the upgrade.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.srv.URL, "http")+"/?after=x", nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("WebSocket with a bad filter: %v %v", resp, err)
	}
}

// A client that cannot keep up is cut off instead of holding the hub.
func TestSlowClientIsCutOff(t *testing.T) {
	s := &sub{ch: make(chan *item, 2), lost: make(chan struct{})}
	for range 3 {
		s.offer(&item{})
	}
	select {
	case <-s.lost:
	default:
		t.Fatal("a client with a full backlog was not cut off")
	}
	s.offer(&item{}) // and again, without panicking on the closed channel
}
