package eventstream

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

func TestParseFilter(t *testing.T) {
	const sid, jid = "0123456789abcdef", "fedcba9876543210"
	for _, c := range []struct {
		query, lastEventID string
		want               Filter
	}{
		{"", "", Filter{IDs: map[string]string{}}},
		{"session=" + sid + "&job=" + jid, "", Filter{IDs: map[string]string{"session": sid, "job": jid}}},
		{"system=0123456789ABCDEF", "", Filter{IDs: map[string]string{"system": sid}}},
		{"types=io.machineserver.session.,%20io.machineserver.job.finished.v1,io.machineserver.session.", "",
			Filter{IDs: map[string]string{}, Types: []string{"io.machineserver.session.", "io.machineserver.job.finished.v1"}}},
		{"types=dev.cdevents.testsuiterun.", "", Filter{IDs: map[string]string{}, Types: []string{"dev.cdevents.testsuiterun."}}},
		{"after=1767225600000-3", "", Filter{IDs: map[string]string{}, After: "1767225600000-3"}},
		{"after=1767225600000", "", Filter{IDs: map[string]string{}, After: "1767225600000-0"}},
		{"after=0", "", Filter{IDs: map[string]string{}, After: "0-0"}},
		// Last-Event-ID wins: a reconnecting EventSource sends its first URL.
		{"after=0", "1767225600000-7", Filter{IDs: map[string]string{}, After: "1767225600000-7"}},
		{"", "1767225600000-7", Filter{IDs: map[string]string{}, After: "1767225600000-7"}},
	} {
		q, _ := url.ParseQuery(c.query)
		got, err := ParseFilter(q, c.lastEventID)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q (Last-Event-ID %q): %+v %v, want %+v", c.query, c.lastEventID, got, err, c.want)
		}
	}
	for _, c := range []struct{ query, lastEventID, says string }{
		{"session=abc", "", "session must be a session id (16 hex digits)"},
		{"system=0123456789abcdeg", "", "system must be a system id"},
		{"job=", "", "job must be a job id"},
		{"types=", "", "empty one"},
		{"types=io.machineserver.session.,,x", "", "empty one"},
		{"types=io.machineserver.sesion.", "", `no event type starts with "io.machineserver.sesion."`},
		// Commands never appear in the stream.
		{"types=io.machineserver.session.poweron.", "", "no event type starts with"},
		{"types=" + strings.Repeat("i", 201), "", "at most 200 characters"},
		{"after=-1", "", "after must be a stream id"},
		{"after=1-2-3", "", "after must be a stream id"},
		{"after=$", "", "after must be a stream id"},
		{"", "last", "Last-Event-ID must be a stream id"},
		{"session=" + sid + "&session=" + jid, "", "session is given 2 times"},
		{"sessions=" + sid, "", `unknown parameter "sessions"; the event stream takes session, system, job, types, after`},
	} {
		q, _ := url.ParseQuery(c.query)
		_, err := ParseFilter(q, c.lastEventID)
		e := httpapi.AsError(err)
		if e == nil || e.Status != 400 || !strings.Contains(e.Message, c.says) {
			t.Errorf("%q (Last-Event-ID %q): %v, want a 400 saying %q", c.query, c.lastEventID, err, c.says)
		}
	}
	var many []string
	for range 33 {
		many = append(many, "io.machineserver.session."+strings.Repeat("x", len(many)))
	}
	q := url.Values{"types": {strings.Join(many, ",")}}
	if _, err := ParseFilter(q, ""); err == nil {
		// Each prefix must start a known type, so this fails on the
		// second; the count bound is for lists of valid prefixes.
		t.Error("33 made-up prefixes were accepted")
	}
}

// itemOf builds an entry the way a publisher and the hub do.
func itemOf(t *testing.T, typ, subject string, data any) *item {
	t.Helper()
	e, err := events.New(events.SourceSessions, typ, subject, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	it, err := parseItem("1767225600000-1", b)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func TestMatch(t *testing.T) {
	const s1, s2, j1, snap = "00000000000000a1", "00000000000000a2", "00000000000000b1", "00000000000000c1"
	sess := model.Session{ID: s1, Name: "s", Backend: "qemu", Machine: "netduino2", State: model.StateRunning}
	other := sess
	other.ID = s2
	started := itemOf(t, events.TypeSessionStarted, s1, sess)
	job := itemOf(t, events.TypeJobStarted, j1, model.Job{ID: j1, SessionID: s1, State: model.JobRunning})
	forked := itemOf(t, events.TypeSnapshotForked, snap, events.Forked{Snapshot: model.Snapshot{ID: snap, SessionID: s2}, Sessions: []model.Session{sess}})
	restored := itemOf(t, events.TypeSnapshotRestored, s2, events.Restored{Snapshot: model.Snapshot{ID: snap, SessionID: s1}, Session: other})
	report := itemOf(t, events.TypeCoverageReady, "00000000000000d1", events.CoverageReport{ID: "00000000000000d1", Sessions: []string{s2, s1}})
	triggered := itemOf(t, events.TypeJobTriggered, "00000000000000e1", events.JobsTriggered{ProgramID: "00000000000000e1", Jobs: []string{j1}})
	gdb := itemOf(t, events.TypeDebuggerAttached, s1, events.Debugger{SessionID: s1, RunnerID: "r", Who: "tcp x"})

	f := func(query string) Filter {
		q, _ := url.ParseQuery(query)
		f, err := ParseFilter(q, "")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, c := range []struct {
		filter string
		it     *item
		want   bool
	}{
		{"", started, true},
		{"session=" + s1, started, true},
		{"session=" + s2, started, false},
		{"session=" + s1, job, true},     // the job's session_id
		{"job=" + j1, job, true},         // the subject
		{"session=" + s1, forked, true},  // one of the new sessions
		{"session=" + s2, forked, false}, // only the snapshot names it, one level down
		{"session=" + s2, restored, true},
		{"session=" + s1, restored, false}, // likewise
		{"session=" + s1, report, true},    // one of the report's sessions
		{"job=" + j1, triggered, true},
		{"job=" + j1, started, false},
		{"session=" + s1, gdb, true},
		{"system=" + s1, started, true}, // a subject matches whatever kind asks
		{"system=" + s1, job, false},
		{"types=io.machineserver.session.", started, true},
		{"types=io.machineserver.session.", job, false},
		{"types=io.machineserver.job.,io.machineserver.session.started.", job, true},
		{"types=io.machineserver.job.&session=" + s2, job, false},
		{"types=io.machineserver.debugger.&session=" + s1, gdb, true},
	} {
		if got := f(c.filter).Match(c.it); got != c.want {
			t.Errorf("%s matches %s about %s: %v, want %v", c.filter, c.it.typ, c.it.subject, got, c.want)
		}
	}
}

// TestMatchSystems: system= gets a system's own events and its node
// sessions' events (their data carries system_id); session= gets the
// system events that list the session as a node, and no others.
func TestMatchSystems(t *testing.T) {
	const sys, other, n1, n2, n3, j1 = "00000000000000f1", "00000000000000f2", "00000000000000a1", "00000000000000a2", "00000000000000a3", "00000000000000b1"
	system := model.System{ID: sys, Name: "pair", Time: model.TimeRealtime, State: model.StateRunning,
		Nodes: []model.SystemNode{{Name: "ping", SessionID: n1}, {Name: "pong", SessionID: n2}},
		Links: []model.SystemLink{{Name: "lan0", Type: model.LinkEthernet, Nodes: []string{"ping", "pong"}}}}
	created := itemOf(t, events.TypeSystemCreated, sys, system)
	started := itemOf(t, events.TypeSystemStarted, sys, system)
	deleted := itemOf(t, events.TypeSystemDeleted, sys, system)
	linkChanged := itemOf(t, events.TypeSystemLinkChanged, sys, events.LinkChanged{SystemID: sys, Link: system.Links[0]})
	node := itemOf(t, events.TypeSessionStarted, n1, model.Session{ID: n1, SystemID: sys, State: model.StateRunning})
	lone := itemOf(t, events.TypeSessionStarted, n3, model.Session{ID: n3, State: model.StateRunning})
	otherNode := itemOf(t, events.TypeSessionStarted, n3, model.Session{ID: n3, SystemID: other, State: model.StateRunning})
	job := itemOf(t, events.TypeJobStarted, j1, model.Job{ID: j1, SessionID: n1, State: model.JobRunning})
	restored := itemOf(t, events.TypeSystemRestored, sys, events.SystemRestored{Snapshot: model.SystemSnapshot{ID: other, SystemID: sys}, System: system})

	f := func(query string) Filter {
		q, _ := url.ParseQuery(query)
		f, err := ParseFilter(q, "")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, c := range []struct {
		filter string
		it     *item
		want   bool
	}{
		{"system=" + sys, created, true},  // the subject
		{"session=" + n2, restored, true}, // a node of the restored system
		{"session=" + n3, restored, false},
		{"system=" + sys, restored, true},
		{"system=" + sys, started, true},
		{"system=" + sys, deleted, true},
		{"system=" + sys, linkChanged, true},
		{"system=" + other, started, false},
		{"system=" + sys, node, true}, // a node session's own event names its system
		{"system=" + sys, lone, false},
		{"system=" + sys, otherNode, false},
		{"system=" + sys, job, false},    // a node's job names the session, not the system
		{"session=" + n1, created, true}, // a node of the system
		{"session=" + n2, started, true},
		{"session=" + n2, deleted, true},
		{"session=" + n3, started, false},     // not a node
		{"session=" + n1, linkChanged, false}, // names the link's nodes by name only
		{"session=" + n1, node, true},
		{"session=" + n1 + "&system=" + sys, started, true},
		{"session=" + n3 + "&system=" + sys, started, false},
		{"session=" + n1 + "&types=io.machineserver.system.", started, true},
		{"session=" + n1 + "&types=io.machineserver.system.", node, false},
	} {
		if got := f(c.filter).Match(c.it); got != c.want {
			t.Errorf("%s matches %s about %s: %v, want %v", c.filter, c.it.typ, c.it.subject, got, c.want)
		}
	}
}

func TestParseItemAddsTheStreamID(t *testing.T) {
	it := itemOf(t, events.TypeSessionStarted, "00000000000000a1", model.Session{ID: "00000000000000a1", State: model.StateRunning})
	var m map[string]any
	if err := json.Unmarshal(it.json, &m); err != nil || m[events.StreamIDExtension] != "1767225600000-1" || m["type"] != events.TypeSessionStarted {
		t.Errorf("%s: %v", it.json, err)
	}
	for _, bad := range []string{"", "[]", "not json", `{"type":`} {
		if _, err := parseItem("1-0", []byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := parseItem("x", []byte(`{}`)); err == nil {
		t.Error("a bad stream id parsed")
	}
}

func TestStreamIDOrder(t *testing.T) {
	ids := []string{"0-0", "0-1", "1-0", "1-9", "2-0", "10-0"}
	for i := range ids {
		for j := range ids {
			a, _ := parseID(ids[i])
			b, _ := parseID(ids[j])
			if a.less(b) != (i < j) {
				t.Errorf("%s < %s: %v", ids[i], ids[j], a.less(b))
			}
		}
	}
}
