// Package eventstream serves GET /api/v1/stream/events: the caller's
// tenant's events, live, as CloudEvents JSON over a WebSocket (one text
// message each) or as server-sent events, each carrying its id in the
// tenant's Redis Stream (the streamid attribute) to resume from. Every
// publisher appends to that stream (events.Tee), so in the distributed
// form a client of any sessions replica sees the events of every function
// and runner.
package eventstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/state"
)

const (
	// keepalive is how often an idle stream shows it is alive (an SSE
	// comment, a WebSocket ping), so proxies do not close it.
	keepalive = 25 * time.Second
	// writeWait bounds one write to a client that stopped reading.
	writeWait = 10 * time.Second
)

var (
	errBehind   = errors.New("client too far behind")
	errDraining = errors.New("server shutting down")
)

// Server is the event stream of one process.
type Server struct {
	st  *state.Store
	log *slog.Logger
	hub *hub
}

// New returns the stream over st's event streams. It starts nothing until
// a client comes.
func New(st *state.Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{st: st, log: log, hub: newHub(st, log)}
}

// ServeHTTP checks the filters (400s), picks the transport (a WebSocket
// upgrade, or Accept: text/event-stream; else 406), fixes where the client
// starts before answering, so every event published after the answer
// reaches it, then sends what it missed and follows the stream.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query(), r.Header.Get("Last-Event-ID"))
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	ws := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	if !ws && !strings.Contains(strings.ToLower(r.Header.Get("Accept")), "text/event-stream") {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusNotAcceptable, "not_acceptable",
			"the event stream is a WebSocket (send the upgrade) or server-sent events (send Accept: text/event-stream)"))
		return
	}
	tenant := auth.Tenant(r.Context())
	from, gap, err := s.start(r.Context(), tenant, f.After)
	if err != nil {
		s.log.WarnContext(r.Context(), "event stream: cannot start", "tenant", tenant, "err", err)
		httpapi.WriteError(w, r, httpapi.Unavailable("the event stream cannot be read now; retry"))
		return
	}
	sb, upto := s.hub.subscribe(tenant, from)
	defer s.hub.unsubscribe(sb)

	ctx := r.Context()
	var out sender
	if ws {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return // Accept answered the client
		}
		defer c.CloseNow()
		ctx = c.CloseRead(ctx)
		out = wsSender{c}
	} else {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
		w.WriteHeader(http.StatusOK)
		sse := sseSender{w: w, rc: http.NewResponseController(w)}
		// The headers and a comment go out now: a client knows it is
		// subscribed once it has them.
		if sse.comment("subscribed") != nil {
			return
		}
		out = sse
	}
	last, err := s.pump(ctx, tenant, f, sb, from, upto, gap, out)
	s.log.DebugContext(ctx, "event stream ended", "tenant", tenant, "last", last.String(), "err", err)
	out.end(last, err)
}

// start returns the position after which the client gets events, and the
// gap notice to send first when its resume point is older than the oldest
// event kept (or the stream lost everything, as a restarted standalone
// server's does).
func (s *Server) start(ctx context.Context, tenant, after string) (streamID, *item, error) {
	oldest, newest, err := s.st.EventBounds(ctx, tenant)
	if err != nil {
		return streamID{}, nil, err
	}
	if after == "" {
		if newest == "" {
			return streamID{}, nil, nil
		}
		from, err := parseID(newest)
		return from, nil, err
	}
	a, err := parseID(after)
	if err != nil || a.isZero() {
		return a, nil, err
	}
	gap := events.StreamGap{After: a.String(), Oldest: oldest}
	switch {
	case oldest == "":
		gap.Message = fmt.Sprintf("events after %s are gone: the tenant's event stream holds none (its store was reset, e.g. a standalone server restarted); following new events", gap.After)
	default:
		o, err := parseID(oldest)
		if err != nil {
			return a, nil, err
		}
		if !a.less(o) {
			return a, nil, nil
		}
		gap.Message = fmt.Sprintf("events after %s may be missing: the tenant's event stream keeps a bounded number (MS_EVENT_STREAM_LEN) and now starts at %s; replaying from there", gap.After, oldest)
	}
	e, err := events.New(events.SourceStream, events.TypeStreamGap, "", gap)
	if err != nil {
		return a, nil, err
	}
	e.SetExtension(events.TenantExtension, tenant)
	b, err := json.Marshal(e)
	if err != nil {
		return a, nil, err
	}
	return a, &item{typ: e.Type(), json: b, noResumePoint: true}, nil
}

// pump sends the gap notice, then the entries after from up to upto read
// from Redis, then the live entries the hub hands over, each once and in
// order, those the filter matches. It returns the last entry passed (sent
// or filtered out), where the client may resume.
func (s *Server) pump(ctx context.Context, tenant string, f Filter, sb *sub, from, upto streamID, gap *item, out sender) (streamID, error) {
	last := from
	if gap != nil {
		if err := out.send(ctx, gap); err != nil {
			return last, err
		}
	}
catchUp:
	for last.less(upto) {
		es, err := s.st.EventsAfter(ctx, tenant, last.String(), readBatch)
		if err != nil {
			return last, err
		}
		for _, e := range es {
			id, err := parseID(e.ID)
			if err != nil || upto.less(id) {
				break catchUp
			}
			last = id
			it, err := parseItem(e.ID, e.Event)
			if err != nil {
				s.log.Warn("event stream: skipping an entry", "tenant", tenant, "err", err)
				continue
			}
			if f.Match(it) {
				if err := out.send(ctx, it); err != nil {
					return last, err
				}
			}
		}
		if len(es) < readBatch {
			break
		}
	}
	if last.less(upto) {
		last = upto
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		select {
		case it := <-sb.ch:
			if !last.less(it.id) {
				continue
			}
			last = it.id
			if f.Match(it) {
				if err := out.send(ctx, it); err != nil {
					return last, err
				}
			}
		case <-sb.lost:
			return last, errBehind
		case <-httpapi.Draining(ctx):
			return last, errDraining
		case <-ctx.Done():
			return last, nil
		case <-tick.C:
			if err := out.keepalive(ctx); err != nil {
				return last, err
			}
		}
	}
}

// sender is a transport: a WebSocket or server-sent events.
type sender interface {
	send(ctx context.Context, it *item) error
	keepalive(ctx context.Context) error
	// end tells the client why the stream ends, when it is the server's
	// doing, and where to resume.
	end(last streamID, err error)
}

type wsSender struct{ c *websocket.Conn }

func (w wsSender) send(ctx context.Context, it *item) error {
	ctx, cancel := context.WithTimeout(ctx, writeWait)
	defer cancel()
	return w.c.Write(ctx, websocket.MessageText, it.json)
}

func (w wsSender) keepalive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, writeWait)
	defer cancel()
	return w.c.Ping(ctx)
}

func (w wsSender) end(last streamID, err error) {
	switch {
	case errors.Is(err, errBehind):
		w.c.Close(websocket.StatusTryAgainLater, "too far behind; reconnect with ?after="+last.String())
	case errors.Is(err, errDraining):
		w.c.Close(websocket.StatusGoingAway, "server shutting down; reconnect with ?after="+last.String())
	case err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		w.c.Close(websocket.StatusTryAgainLater, "event stream unavailable; reconnect with ?after="+last.String())
	}
}

// sseSender writes "id: <streamid>\nevent: <type>\ndata: <event JSON>\n\n"
// per event (no id for the gap notice, so a client's Last-Event-ID stays
// its last real event).
type sseSender struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s sseSender) write(b []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(writeWait))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s sseSender) send(_ context.Context, it *item) error {
	var b []byte
	if !it.noResumePoint {
		b = append(append(append(b, "id: "...), it.id.String()...), '\n')
	}
	b = append(append(append(b, "event: "...), it.typ...), '\n')
	b = append(append(append(b, "data: "...), it.json...), "\n\n"...)
	return s.write(b)
}

func (s sseSender) comment(c string) error { return s.write([]byte(": " + c + "\n\n")) }

func (s sseSender) keepalive(context.Context) error { return s.comment("keepalive") }

// end leaves a comment saying why; an EventSource reconnects by itself with
// Last-Event-ID.
func (s sseSender) end(last streamID, err error) {
	switch {
	case errors.Is(err, errBehind):
		_ = s.comment("too far behind; reconnect with Last-Event-ID " + last.String())
	case errors.Is(err, errDraining):
		_ = s.comment("server shutting down; reconnect with Last-Event-ID " + last.String())
	}
}
