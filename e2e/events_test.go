package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/shared/model"
)

// eventClient is a client of GET /api/v1/stream/events (WebSocket or
// server-sent events) that keeps what arrives.
type eventClient struct {
	mu   sync.Mutex
	got  []cloudevents.Event
	ids  []string // the SSE id: line of each event ("" for none)
	err  error
	more chan struct{}
	stop func()
}

func newEventClient(stop func()) *eventClient {
	return &eventClient{more: make(chan struct{}, 1), stop: stop}
}

func (c *eventClient) add(b []byte, sseID string, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		var e cloudevents.Event
		if err = json.Unmarshal(b, &e); err == nil {
			err = e.Validate()
		}
		if err == nil {
			c.got = append(c.got, e)
			c.ids = append(c.ids, sseID)
		}
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	select {
	case c.more <- struct{}{}:
	default:
	}
	return err == nil
}

// dialEvents opens the stream as a WebSocket with the Authorization header
// h (the admin key when empty).
func (pl *platform) dialEvents(t testing.TB, h, query string) *eventClient {
	t.Helper()
	if h == "" {
		h = "ApiKey " + apiKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/stream/events?" + query
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {h}}})
	if err != nil {
		t.Fatalf("dial the event stream (%s): %v", query, err)
	}
	c.SetReadLimit(1 << 20)
	ec := newEventClient(func() { c.CloseNow() })
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if !ec.add(b, "", err) {
				return
			}
		}
	}()
	t.Cleanup(ec.stop)
	return ec
}

// sseEvents opens the stream as server-sent events; the answer's headers
// are in once it returns, and with them the subscription.
func (pl *platform) sseEvents(t testing.TB, query, lastEventID string) *eventClient {
	t.Helper()
	req, _ := http.NewRequest("GET", pl.base+"/api/v1/stream/events?"+query, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("SSE: %d %s", resp.StatusCode, b)
	}
	ec := newEventClient(func() { resp.Body.Close() })
	go func() {
		r := bufio.NewReader(resp.Body)
		var id, data string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				ec.add(nil, "", err)
				return
			}
			switch line = strings.TrimSuffix(line, "\n"); {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && data != "":
				if !ec.add([]byte(data), id, nil) {
					return
				}
				id, data = "", ""
			}
		}
	}()
	t.Cleanup(ec.stop)
	return ec
}

// waitFor waits until an event matching each predicate has arrived, in
// that order (others may come between), and returns them.
func (c *eventClient) waitFor(t testing.TB, what string, preds ...func(cloudevents.Event) bool) []cloudevents.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		var out []cloudevents.Event
		for _, e := range c.got {
			if len(out) < len(preds) && preds[len(out)](e) {
				out = append(out, e)
			}
		}
		got, err := slices.Clone(c.got), c.err
		c.mu.Unlock()
		if len(out) == len(preds) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: the stream ended (%v) after %s", what, err, summary(got))
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("%s never arrived; got %s", what, summary(got))
		}
	}
}

func (c *eventClient) events() []cloudevents.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func summary(es []cloudevents.Event) string {
	var s []string
	for _, e := range es {
		s = append(s, strings.TrimPrefix(e.Type(), "io.machineserver.")+"("+e.Subject()+")")
	}
	return "[" + strings.Join(s, " ") + "]"
}

func is(typ, subject string) func(cloudevents.Event) bool {
	return func(e cloudevents.Event) bool { return e.Type() == typ && (subject == "" || e.Subject() == subject) }
}

func streamID(e cloudevents.Event) string {
	s, _ := e.Extensions()[events.StreamIDExtension].(string)
	return s
}

// TestEventStream follows a session's life on the event stream in both
// forms: live over a WebSocket, filtered, resumed with ?after= after a
// disconnection, as server-sent events resumed with Last-Event-ID; another
// tenant sees none of it, and bad filters are 400s.
func TestEventStream(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { eventStream(t, form.start(t)) })
	}
}

func eventStream(t *testing.T, pl *platform) {
	const board = "mps2-an385"
	prog := uploadID(t, pl, board)
	var key struct {
		Key string `json:"key"`
	}
	pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "acme", "tenant": "acme", "scopes": []string{"read", "write"}}, &key)
	acme := "ApiKey " + key.Key
	acmeWS := pl.dialEvents(t, acme, "")
	all := pl.dialEvents(t, "", "")

	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "watched", "board_config": map[string]string{"board": board}}, &s)
	id := s["id"].(string)
	all.waitFor(t, "session.created", is(events.TypeSessionCreated, id))
	// Only this session's state changes and emulator lines.
	mine := pl.dialEvents(t, "", "session="+id+"&types=io.machineserver.session.,io.machineserver.emulator.")
	var other map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "other", "board_config": map[string]string{"board": board}}, &other)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)

	// Live, in the order each publisher published them (in the
	// distributed form the sessions function and the runner are two): the
	// runner's emulator line comes before the state it leads to.
	all.waitFor(t, "the sessions' changes", is(events.TypeSessionCreated, other["id"].(string)), is(events.TypeSessionProgramLoaded, id))
	got := all.waitFor(t, "the power on", is(events.TypeEmulatorStarted, id), is(events.TypeSessionStarted, id))
	var started model.Session
	if err := got[1].DataAs(&started); err != nil || started.State != model.StateRunning || got[1].Extensions()[events.TenantExtension] != model.DefaultTenant {
		t.Fatalf("session.started: %+v %v (tenant %v)", started, err, got[1].Extensions()[events.TenantExtension])
	}
	var emu events.EmulatorStarted
	if err := got[0].DataAs(&emu); err != nil || emu.SessionID != id || emu.Machine != board || emu.Pid <= 0 || emu.RunnerID == "" {
		t.Fatalf("emulator.started: %+v %v", emu, err)
	}
	// Stream ids grow with every event.
	for i, e := range all.events() {
		if i > 0 && !less(streamID(all.events()[i-1]), streamID(e)) {
			t.Fatalf("stream ids do not grow: %s then %s", streamID(all.events()[i-1]), streamID(e))
		}
	}

	// A debugger attaches and detaches.
	var info gdbInfo
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id+"/gdb", nil, &info)
	if out, err := gdbtest.GDBFor(context.Background(), t, firmware(t, board, "fw.elf"), info.TCP, "info registers pc", "detach"); !strings.Contains(out, "detached") {
		t.Fatalf("gdb (err %v):\n%s", err, out)
	}
	dbg := all.waitFor(t, "the debugger lines", is(events.TypeDebuggerAttached, id), is(events.TypeDebuggerDetached, id))
	var att, det events.Debugger
	if dbg[0].DataAs(&att) != nil || dbg[1].DataAs(&det) != nil || att.Who == "" || det.Who != att.Who || det.EndedBy != "debugger" {
		t.Fatalf("debugger events: %+v %+v", att, det)
	}

	// The client goes away; what happens meanwhile is replayed when it
	// comes back with the last stream id it saw, and then it is live again.
	seen := all.events()
	lastSeen := streamID(seen[len(seen)-1])
	all.stop()
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
	back := pl.dialEvents(t, "", "after="+lastSeen)
	got = back.waitFor(t, "the missed power off", is(events.TypeEmulatorEnded, id), is(events.TypeSessionStopped, id))
	var ended events.EmulatorEnded
	if err := got[0].DataAs(&ended); err != nil || ended.Exit.Kind != "stopped" || ended.State != model.StateStopped || ended.Reason != "stopped on request" {
		t.Fatalf("emulator.ended: %+v %v", ended, err)
	}
	if first := back.events()[0]; !less(lastSeen, streamID(first)) {
		t.Fatalf("resumed after %s, first event is %s", lastSeen, streamID(first))
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+other["id"].(string), nil, nil)
	back.waitFor(t, "live after the replay", is(events.TypeSessionDeleted, other["id"].(string)))

	// Server-sent events resume from Last-Event-ID (the header wins over
	// ?after=, as an EventSource reconnecting sends both), each with its
	// stream id as the SSE id.
	from := streamID(dbg[1])
	sse := pl.sseEvents(t, "after=0", from)
	sse.waitFor(t, "the SSE replay", is(events.TypeEmulatorEnded, id), is(events.TypeSessionStopped, id))
	sse.waitFor(t, "the SSE replay", is(events.TypeSessionDeleted, other["id"].(string)))
	for i, e := range sse.events() {
		if sse.ids[i] != streamID(e) || !less(from, streamID(e)) {
			t.Fatalf("SSE event %d: id %q, streamid %q, resumed after %s", i, sse.ids[i], streamID(e), from)
		}
	}

	// The filtered client saw only its session's state and emulator lines.
	mine.waitFor(t, "the filtered stream", is(events.TypeSessionProgramLoaded, id))
	mine.waitFor(t, "the filtered stream", is(events.TypeEmulatorStarted, id), is(events.TypeSessionStarted, id),
		is(events.TypeEmulatorEnded, id), is(events.TypeSessionStopped, id))
	for _, e := range mine.events() {
		if e.Subject() != id || !strings.HasPrefix(e.Type(), "io.machineserver.session.") && !strings.HasPrefix(e.Type(), "io.machineserver.emulator.") {
			t.Fatalf("filtered stream got %s about %s", e.Type(), e.Subject())
		}
	}

	// Another tenant: its first event is its own, nothing of default came
	// before it.
	code, body := pl.as(t, acme, "POST", "/api/v1/sessions", map[string]any{"name": "acme's", "board_config": map[string]string{"board": board}})
	if code != 201 {
		t.Fatalf("acme creates a session: %d %s", code, body)
	}
	acmeID := decode(t, body)["id"].(string)
	acmeWS.waitFor(t, "acme's own event", is(events.TypeSessionCreated, acmeID))
	if es := acmeWS.events(); es[0].Subject() != acmeID || es[0].Extensions()[events.TenantExtension] != "acme" {
		t.Fatalf("acme's stream: %s", summary(es))
	}
	// Nor does replaying help: acme's stream is acme's only.
	for _, e := range pl.dialEvents(t, acme, "after=0").waitFor(t, "acme's replay", is(events.TypeSessionCreated, acmeID)) {
		if e.Extensions()[events.TenantExtension] != "acme" {
			t.Fatalf("acme replayed %s of tenant %v", e.Type(), e.Extensions()[events.TenantExtension])
		}
	}
	if es := acmeWS.events(); slices.ContainsFunc(es, func(e cloudevents.Event) bool { return e.Subject() == id }) {
		t.Fatalf("acme saw default's session: %s", summary(es))
	}

	// Bad filters are 400s that say what is allowed, before any upgrade.
	for _, q := range []string{"session=nope", "types=io.machineserver.sesion.", "after=yesterday", "sesion=" + id} {
		req, _ := http.NewRequest("GET", pl.base+"/api/v1/stream/events?"+q, nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e apiError
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || json.Unmarshal(b, &e) != nil || e.Error.Code != "invalid_argument" || e.Error.Message == "" {
			t.Errorf("%s: %d %s, want a 400 error", q, resp.StatusCode, b)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, resp, err = websocket.Dial(ctx, strings.Replace(pl.base, "http", "ws", 1)+"/api/v1/stream/events?"+q,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
		cancel()
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("%s over WebSocket: %v %v, want a 400", q, resp, err)
		}
	}
	// Neither a WebSocket nor Accept: text/event-stream.
	if code, body := pl.call(t, "GET", "/api/v1/stream/events", nil, nil); code != 406 || !strings.Contains(string(body), "text/event-stream") {
		t.Errorf("plain GET: %d %s", code, body)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}

// less orders stream ids ("<ms>-<seq>").
func less(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	return as < bs
}

// BenchmarkEventLatency measures how long a state change takes to reach a
// WebSocket client of the event stream, in both forms: from the event's
// time (set where the change is recorded: the runner, for a power on or
// off) to its arrival. One op is a power on and a power off of a running
// board, two events.
func BenchmarkEventLatency(b *testing.B) {
	for _, form := range forms {
		b.Run(form.name, func(b *testing.B) {
			pl := form.start(b, "MS_LOG_LEVEL=warn")
			const board = "mps2-an385"
			code, body := pl.upload(b, "bench", "elf", firmware(b, board, "fw.elf"), nil)
			if code != 201 {
				b.Fatalf("upload: %d %s", code, body)
			}
			var s map[string]any
			pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "lat", "board_config": map[string]string{"board": board}}, &s)
			id := s["id"].(string)
			pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": decode(b, body)["id"].(string)}, nil)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/stream/events?session=" + id + "&types=io.machineserver.session.started.,io.machineserver.session.stopped."
			c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			// Stamped as they arrive, while the request that caused them may
			// still be answering.
			type arrival struct {
				e  cloudevents.Event
				at time.Time
			}
			arrivals := make(chan arrival, 16)
			go func() {
				defer close(arrivals)
				for {
					_, msg, err := c.Read(ctx)
					at := time.Now()
					var e cloudevents.Event
					if err != nil || json.Unmarshal(msg, &e) != nil {
						return
					}
					arrivals <- arrival{e, at}
				}
			}()
			arrive := func(want string) time.Duration {
				select {
				case a, ok := <-arrivals:
					if !ok || a.e.Type() != want {
						b.Fatalf("got %s (stream open: %v), want %s", a.e.Type(), ok, want)
					}
					return a.at.Sub(a.e.Time())
				case <-time.After(20 * time.Second):
					b.Fatalf("no %s", want)
				}
				return 0
			}
			var lat []time.Duration
			b.ResetTimer()
			for range b.N {
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
				lat = append(lat, arrive(events.TypeSessionStarted))
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
				lat = append(lat, arrive(events.TypeSessionStopped))
			}
			b.StopTimer()
			b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
			b.ReportMetric(0, "ns/op")
			pl.must(b, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
		})
	}
}
