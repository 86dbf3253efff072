package eventstream

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// kinds are the resources an event can be filtered by (?session=, ?system=,
// ?job=).
var kinds = []string{"session", "system", "job"}

// params are the query parameters the stream takes.
var params = append(slices.Clone(kinds), "types", "after")

const (
	maxTypes      = 32
	maxTypeLength = 200
)

// Filter is what a client asked for: ids of resources the events must be
// about (all that are set), type prefixes one of which each event's type
// must start with, and where to start.
type Filter struct {
	// IDs maps a kind ("session", "system", "job") to the id given.
	IDs   map[string]string
	Types []string
	// After is the stream id to resume after ("" for new events only;
	// "0-0" for every event kept).
	After string
}

// ParseFilter reads the query and the Last-Event-ID header (an
// EventSource sends it when it reconnects, with the URL it first used, so
// it wins over ?after=). Errors are 400s saying what is allowed.
func ParseFilter(q url.Values, lastEventID string) (Filter, error) {
	f := Filter{IDs: map[string]string{}}
	for name, vs := range q {
		if !slices.Contains(params, name) {
			return f, httpapi.BadRequest("unknown parameter %q; the event stream takes %s", name, strings.Join(params, ", "))
		}
		if len(vs) > 1 {
			return f, httpapi.BadRequest("%s is given %d times; give it once (types takes a comma-separated list)", name, len(vs))
		}
	}
	for _, k := range kinds {
		v, ok := q[k]
		if !ok {
			continue
		}
		if !model.ValidID(v[0]) {
			return f, httpapi.BadRequest("%s must be a %s id (16 hex digits); got %q", k, k, v[0])
		}
		f.IDs[k] = strings.ToLower(v[0])
	}
	if v, ok := q["types"]; ok {
		types, err := parseTypes(v[0])
		if err != nil {
			return f, err
		}
		f.Types = types
	}
	after, from := q.Get("after"), "after"
	if lastEventID != "" {
		after, from = lastEventID, "Last-Event-ID"
	}
	if _, ok := q["after"]; ok || lastEventID != "" {
		id, err := parseID(after)
		if err != nil {
			return f, httpapi.BadRequest("%s must be a stream id (the streamid of an event, e.g. 1767225600000-0; 0 for every event kept); got %q", from, after)
		}
		f.After = id.String()
	}
	return f, nil
}

// parseTypes splits a comma-separated list of type prefixes; each must
// begin at least one notification type of the catalog, so a typo is an
// error instead of a silent stream.
func parseTypes(v string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, httpapi.BadRequest("types is a comma-separated list of event type prefixes, e.g. io.machineserver.session.; got %q with an empty one", v)
		}
		if len(p) > maxTypeLength {
			return nil, httpapi.BadRequest("a type prefix is at most %d characters; got one of %d", maxTypeLength, len(p))
		}
		if !slices.ContainsFunc(events.Catalog, func(s events.Spec) bool {
			return s.Direction == events.Notification && strings.HasPrefix(s.Type, p)
		}) {
			return nil, httpapi.BadRequest("no event type starts with %q; types are prefixes of %s", p, knownTypes())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) > maxTypes {
		return nil, httpapi.BadRequest("types takes at most %d prefixes; got %d", maxTypes, len(out))
	}
	return out, nil
}

// knownTypes lists the notification types, the ones a stream can carry.
func knownTypes() string {
	var ts []string
	for _, s := range events.Catalog {
		if s.Direction == events.Notification {
			ts = append(ts, s.Type)
		}
	}
	return strings.Join(ts, ", ")
}

// Match reports whether the stream sends ev to this client.
func (f Filter) Match(ev *item) bool {
	if len(f.Types) > 0 && !slices.ContainsFunc(f.Types, func(p string) bool { return strings.HasPrefix(ev.typ, p) }) {
		return false
	}
	for k, id := range f.IDs {
		if ev.subject != id && !slices.Contains(ev.refs[k], id) {
			return false
		}
	}
	return true
}

// item is one stream entry as clients get it, with what filters look at.
type item struct {
	id            streamID
	typ, subject  string
	refs          map[string][]string
	json          []byte // structured mode, with the streamid attribute
	noResumePoint bool   // a notice of the stream itself (no streamid)
}

// parseItem decodes an entry's event and adds its stream id as the
// streamid extension attribute.
func parseItem(id string, event []byte) (*item, error) {
	sid, err := parseID(id)
	if err != nil {
		return nil, err
	}
	var env struct {
		Type    string          `json:"type"`
		Subject string          `json:"subject"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(event, &env); err != nil || len(event) < 2 || event[0] != '{' {
		return nil, fmt.Errorf("stream entry %s is not a structured CloudEvent: %v", id, err)
	}
	it := &item{id: sid, typ: env.Type, subject: env.Subject, refs: refsOf(env.Data)}
	it.json = append(append([]byte(`{"`+events.StreamIDExtension+`":"`), id...), '"', ',')
	it.json = append(it.json, event[1:]...)
	return it, nil
}

// refsOf finds the ids an event's data names, by kind: for kind "session",
// "session_id" (a string), "session" (an object's "id") and "sessions" (an
// array of ids or of objects with an "id"). That covers a job's session, a
// snapshot's session, a restore's session, a fork's sessions and a coverage
// report's sessions, and through "system_id" a node session's system; the
// subject covers the resource an event is about. A system's events carry
// the system, whose nodes are sessions one level down ("nodes", objects
// with a "session_id"): they count as sessions the event names, so a
// client following a session also sees the system it is a node of start,
// stop and go.
func refsOf(data json.RawMessage) map[string][]string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return nil
	}
	refs := map[string][]string{}
	for _, k := range kinds {
		var s string
		if json.Unmarshal(fields[k+"_id"], &s) == nil && s != "" {
			refs[k] = append(refs[k], s)
		}
		var obj struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(fields[k], &obj) == nil && obj.ID != "" {
			refs[k] = append(refs[k], obj.ID)
		}
		var list []json.RawMessage
		if json.Unmarshal(fields[k+"s"], &list) != nil {
			continue
		}
		for _, e := range list {
			if json.Unmarshal(e, &s) == nil && s != "" {
				refs[k] = append(refs[k], s)
			} else if json.Unmarshal(e, &obj) == nil && obj.ID != "" {
				refs[k] = append(refs[k], obj.ID)
			}
		}
	}
	refs["session"] = append(refs["session"], nodeSessions(fields["nodes"])...)
	// A system restored or forked is one level further down.
	var sys struct {
		Nodes json.RawMessage `json:"nodes"`
	}
	if json.Unmarshal(fields["system"], &sys) == nil {
		refs["session"] = append(refs["session"], nodeSessions(sys.Nodes)...)
	}
	return refs
}

// nodeSessions are the sessions of a system's nodes (objects with a
// "session_id"); a link's nodes are names and name no session.
func nodeSessions(raw json.RawMessage) []string {
	var nodes []json.RawMessage
	if json.Unmarshal(raw, &nodes) != nil {
		return nil
	}
	var out []string
	for _, e := range nodes {
		var n struct {
			SessionID string `json:"session_id"`
		}
		if json.Unmarshal(e, &n) == nil && n.SessionID != "" {
			out = append(out, n.SessionID)
		}
	}
	return out
}

// streamID is a Redis Stream entry id: milliseconds and a sequence number.
type streamID struct{ ms, seq uint64 }

// parseID reads "<ms>-<seq>" or "<ms>" (sequence 0).
func parseID(s string) (streamID, error) {
	ms, seq, hasSeq := strings.Cut(s, "-")
	var id streamID
	var err error
	if id.ms, err = strconv.ParseUint(ms, 10, 64); err != nil {
		return id, fmt.Errorf("stream id %q: %w", s, err)
	}
	if hasSeq {
		if id.seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
			return id, fmt.Errorf("stream id %q: %w", s, err)
		}
	}
	return id, nil
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

func (a streamID) less(b streamID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

func (a streamID) isZero() bool { return a == streamID{} }
