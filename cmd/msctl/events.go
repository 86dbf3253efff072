package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

const eventsUsage = `usage: msctl events [--session ID] [--job ID] [--system ID] [--types PREFIX,...] [--after EVENT_ID]

Tails the tenant's events (WS /api/v1/stream/events): one line per event with
its time, type, subject and state, or with --output json each CloudEvent as one
JSON line. --session, --job and --system keep the events about that resource;
--types the types that start with one of the prefixes (e.g.
io.machineserver.session.,io.machineserver.job.finished). --after replays what
came after that event first (its streamid attribute; 0 for every event kept).
A dropped connection is resumed after the last event shown, so none is missed
or repeated; when the server no longer keeps them, its notice says so.
`

// event is the part of a CloudEvent msctl reads: what the text output
// shows, and the stream id to resume after.
type event struct {
	StreamID string          `json:"streamid"`
	Type     string          `json:"type"`
	Subject  string          `json:"subject"`
	Time     time.Time       `json:"time"`
	Data     json.RawMessage `json:"data"`
}

// typeGap is the stream's notice that events were lost (it has no streamid).
const typeGap = "io.machineserver.stream.gap.v1"

func runEvents(ctx context.Context, e *env, args []string) error {
	fs := e.flags("events")
	q := url.Values{}
	for _, name := range []string{"session", "job", "system", "types", "after"} {
		fs.Func(name, "", func(v string) error { q.Set(name, v); return nil })
	}
	_, c, err := e.connect(fs, args, eventsUsage, 0, 0)
	if err != nil {
		return err
	}
	connected, retry := false, 0
	for {
		err := tailEvents(ctx, e, c, q)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Only a stream that was up is resumed: a refusal or a server
		// not there at the start gets the same answer again.
		up := errors.Is(err, errConnected)
		connected = connected || up
		var ae *client.Error
		if !connected || errors.As(err, &ae) || retry >= 10 {
			return err
		}
		if up {
			retry = 0
		}
		retry++
		fmt.Fprintf(e.err, "msctl: event stream lost (%v); resuming\n", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(retry) * 500 * time.Millisecond):
		}
	}
}

// errConnected marks a stream that was up before it broke.
var errConnected = errors.New("the server ended the stream")

// tailEvents prints the stream's events until it breaks; q's after moves to
// each event shown, so a resumed stream continues there.
func tailEvents(ctx context.Context, e *env, c *client.Client, q url.Values) error {
	ws, err := c.Dial(ctx, client.Query(client.Path("stream", "events"), q))
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("%w: %s", errConnected, first(ce.Reason, ce.Code.String()))
			}
			return fmt.Errorf("%w: %v", errConnected, err)
		}
		var ev event
		if err := json.Unmarshal(data, &ev); err != nil {
			return fmt.Errorf("event stream sent %q: %w", data, err)
		}
		if ev.StreamID != "" {
			q.Set("after", ev.StreamID)
		}
		if e.json() {
			var line bytes.Buffer
			if json.Compact(&line, data) != nil {
				line.Reset()
				line.Write(data)
			}
			line.WriteByte('\n')
			e.out.Write(line.Bytes())
			continue
		}
		if ev.Type == typeGap {
			var gap struct{ Message string }
			json.Unmarshal(ev.Data, &gap)
			fmt.Fprintln(e.err, "msctl:", gap.Message)
			continue
		}
		fmt.Fprintln(e.out, eventLine(ev))
	}
}

// eventLine is an event in one line: time, type, subject, and the state
// and reason its data carries, if any.
func eventLine(ev event) string {
	var d struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(ev.Data, &d)
	parts := []string{ev.Time.Local().Format("15:04:05.000"), ev.Type}
	if ev.Subject != "" {
		parts = append(parts, ev.Subject)
	}
	if d.State != "" {
		parts = append(parts, d.State)
	}
	line := strings.Join(parts, "  ")
	if d.Reason != "" {
		line += ": " + d.Reason
	}
	return line
}
