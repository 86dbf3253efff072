package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// systemsAPI is a fake of the systems routes holding one system, "y1",
// with a UART link "link0" and an Ethernet link "lan0"; it records the
// requests that change something.
type systemsAPI struct {
	mu    sync.Mutex
	sys   model.System
	calls []string // "METHOD path body"
}

func (a *systemsAPI) record(r *http.Request) []byte {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.calls = append(a.calls, r.Method+" "+r.URL.RequestURI()+" "+strings.TrimSpace(string(body)))
	a.mu.Unlock()
	return body
}

func (a *systemsAPI) taken() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.calls
	a.calls = nil
	return out
}

func newSystemsAPI(t *testing.T) (*systemsAPI, string) {
	a := &systemsAPI{sys: model.System{ID: "y1", Name: "pair", Time: model.TimeRealtime, State: model.StateCreated,
		Nodes: []model.SystemNode{{Name: "ping", SessionID: "s1", Machine: "mps2-an385", ProgramID: "p1"}, {Name: "pong", SessionID: "s2", Machine: "mps2-an385", ProgramID: "p2"}},
		Links: []model.SystemLink{
			{Name: "link0", Type: model.LinkUART, Ends: []string{"ping:uart0", "pong:uart0"}, Faults: model.LinkFaults{Loss: 0.25}},
			{Name: "lan0", Type: model.LinkEthernet, Nodes: []string{"ping", "pong"}},
		}}}
	own := func(w http.ResponseWriter, r *http.Request) bool {
		if r.PathValue("id") != a.sys.ID {
			httpapi.WriteError(w, r, httpapi.NotFound("system %s not found", r.PathValue("id")))
			return false
		}
		return true
	}
	state := func(st model.State) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a.record(r)
			if !own(w, r) {
				return
			}
			a.mu.Lock()
			a.sys.State = st
			s := a.sys
			a.mu.Unlock()
			httpapi.WriteJSON(w, 200, s)
		}
	}
	linkOf := func(w http.ResponseWriter, r *http.Request) (int, bool) {
		if !own(w, r) {
			return 0, false
		}
		for i, l := range a.sys.Links {
			if l.Name == r.PathValue("link") {
				return i, true
			}
		}
		httpapi.WriteError(w, r, httpapi.NotFound("system y1 has no link %q; its links: link0, lan0", r.PathValue("link")))
		return 0, false
	}
	status := func(i int) map[string]any {
		l := a.sys.Links[i]
		st := map[string]any{"system_id": "y1", "link": l}
		if l.Type == model.LinkUART {
			st["uart"] = map[string]any{"attached": true, "directions": []map[string]any{
				{"from": "ping:uart0", "to": "pong:uart0", "bytes": 40, "delivered": 30, "lost": 10},
				{"from": "pong:uart0", "to": "ping:uart0", "bytes": 30, "delivered": 30},
			}}
		} else {
			st["ethernet"] = map[string]any{"ports": []map[string]any{{"session": "s1", "attached": true, "in": 7, "out": 5}}}
		}
		return st
	}
	srv := api(t, map[string]http.HandlerFunc{
		"POST /api/v1/systems": func(w http.ResponseWriter, r *http.Request) {
			var spec model.SystemSpec
			if err := json.Unmarshal(a.record(r), &spec); err != nil || len(spec.Nodes) == 0 {
				httpapi.WriteError(w, r, httpapi.BadRequest("a system needs nodes"))
				return
			}
			a.mu.Lock()
			a.sys.Name, a.sys.State = spec.Name, model.StateCreated
			s := a.sys
			a.mu.Unlock()
			httpapi.WriteJSON(w, 201, s)
		},
		"GET /api/v1/systems": func(w http.ResponseWriter, r *http.Request) {
			// Two pages: ls reads them all.
			if r.URL.Query().Get("page") == "1" {
				httpapi.WriteJSON(w, 200, map[string]any{"systems": []model.System{a.sys}, "total": 2})
				return
			}
			httpapi.WriteJSON(w, 200, map[string]any{"systems": []model.System{{ID: "y2", Name: "other", State: model.StateStopped}}, "total": 2})
		},
		"GET /api/v1/systems/{id}": func(w http.ResponseWriter, r *http.Request) {
			if own(w, r) {
				httpapi.WriteJSON(w, 200, a.sys)
			}
		},
		"DELETE /api/v1/systems/{id}": func(w http.ResponseWriter, r *http.Request) {
			a.record(r)
			if own(w, r) {
				w.WriteHeader(204)
			}
		},
		"POST /api/v1/systems/{id}/poweron":  state(model.StateRunning),
		"POST /api/v1/systems/{id}/poweroff": state(model.StateStopped),
		"POST /api/v1/systems/{id}/reset":    state(model.StateRunning),
		"GET /api/v1/systems/{id}/links/{link}": func(w http.ResponseWriter, r *http.Request) {
			if i, ok := linkOf(w, r); ok {
				httpapi.WriteJSON(w, 200, status(i))
			}
		},
		"POST /api/v1/systems/{id}/links/{link}": func(w http.ResponseWriter, r *http.Request) {
			body := a.record(r)
			i, ok := linkOf(w, r)
			if !ok {
				return
			}
			var f model.LinkFaults
			if err := json.Unmarshal(body, &f); err != nil {
				httpapi.WriteError(w, r, httpapi.BadRequest("faults: %v", err))
				return
			}
			a.mu.Lock()
			a.sys.Links[i].Faults = f
			a.mu.Unlock()
			httpapi.WriteJSON(w, 200, status(i))
		},
		"GET /api/v1/systems/{id}/links/{link}/capture": func(w http.ResponseWriter, r *http.Request) {
			a.record(r)
			i, ok := linkOf(w, r)
			if !ok {
				return
			}
			if a.sys.Links[i].Type == model.LinkEthernet {
				w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
				w.Write([]byte("\xd4\xc3\xb2\xa1pcap frames"))
				return
			}
			httpapi.WriteJSON(w, 200, map[string]any{"records": []map[string]any{{"seq": 4, "from": "ping:uart0", "to": "pong:uart0", "data": []byte("PING 4\n")}}, "next": 4})
		},
	})
	return a, srv.URL
}

func TestSystems(t *testing.T) {
	hermetic(t)
	a, url := newSystemsAPI(t)
	key := []string{"--server", url, "--key", "ms_good"}
	ms := func(stdin string, args ...string) result {
		t.Helper()
		return msctl(t, stdin, append(args, key...)...)
	}
	const spec = `{"name":"pair","nodes":[{"name":"ping","board_config":{"board":"mps2-an385"},"program_id":"p1"},{"name":"pong","board_config":{"board":"mps2-an385"},"program_id":"p2"}],"links":[{"type":"uart","ends":["ping:uart0","pong:uart0"]}]}`
	file := filepath.Join(t.TempDir(), "pair.json")
	if err := os.WriteFile(file, []byte(spec+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// create: from a file as it is, from stdin, then powered on.
	if r := ms("", "systems", "create", file); r.code != 0 || r.stdout != "y1\n" {
		t.Fatalf("systems create FILE: %+v", r)
	}
	if got := a.taken(); len(got) != 1 || got[0] != "POST /api/v1/systems "+spec {
		t.Fatalf("create sent %q", got)
	}
	r := ms(spec, "systems", "create", "-", "--poweron", "--output", "json")
	var s model.System
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &s) != nil || s.ID != "y1" || s.State != model.StateRunning {
		t.Fatalf("systems create - --poweron --output json: %+v", r)
	}
	if got := a.taken(); len(got) != 2 || got[1] != "POST /api/v1/systems/y1/poweron " {
		t.Fatalf("create --poweron sent %q", got)
	}
	if r := ms(spec, "systems", "create"); r.code != 0 || r.stdout != "y1\n" {
		t.Fatalf("systems create from stdin without -: %+v", r)
	}
	a.taken()

	// A spec that is not JSON never reaches the server; one the server
	// refuses says why.
	if r := ms(`{"name":`, "systems", "create"); r.code != 1 || !strings.HasPrefix(r.stderr, "msctl: the spec in stdin is not a JSON object") {
		t.Errorf("create from broken JSON: %+v", r)
	}
	if r := ms("", "systems", "create", filepath.Join(t.TempDir(), "nope.json")); r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("create from a missing file: %+v", r)
	}
	if got := a.taken(); len(got) != 0 {
		t.Errorf("bad specs were sent: %q", got)
	}
	if r := ms(`{"name":"empty"}`, "systems", "create"); r.code != 1 || r.stderr != "msctl: a system needs nodes\n" {
		t.Errorf("create refused by the server: %+v", r)
	}
	a.taken()

	// ls, get.
	r = ms("", "systems", "ls")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ID ") || !strings.Contains(r.stdout, "ping,pong") || !strings.Contains(r.stdout, "y2") {
		t.Fatalf("systems ls: %+v", r)
	}
	var ss []model.System
	if r := ms("", "systems", "list", "--output", "json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &ss) != nil || len(ss) != 2 || ss[1].ID != "y2" {
		t.Fatalf("systems list --output json: %+v", r)
	}
	r = ms("", "systems", "get", "y1")
	for _, want := range []string{"name:     pair", "state:    created", "s2", "ping:uart0 <-> pong:uart0", "loss 0.25", "lan0", "clean"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("systems get does not show %q:\n%s", want, r.stdout)
		}
	}
	if r := ms("", "systems", "get", "y9"); r.code != 1 || r.stderr != "msctl: system y9 not found\n" {
		t.Errorf("systems get of an unknown system: %+v", r)
	}

	// The power operations print the state they left.
	for _, c := range []struct{ action, want string }{{"poweroff", "y1 stopped\n"}, {"poweron", "y1 running\n"}, {"reset", "y1 running\n"}} {
		if r := ms("", "systems", c.action, "y1"); r.code != 0 || r.stdout != c.want {
			t.Errorf("systems %s: %+v", c.action, r)
		}
	}
	a.taken()

	// link: shows, sets exactly the faults given, cleans.
	r = ms("", "systems", "link", "y1", "link0")
	for _, want := range []string{"faults:  loss 0.25", "attached: true", "ping:uart0 -> pong:uart0", "DELIVERED"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("systems link does not show %q:\n%+v", want, r)
		}
	}
	if r := ms("", "systems", "link", "y1", "lan0"); r.code != 0 || !strings.Contains(r.stdout, "OVERFLOW") || !strings.Contains(r.stdout, "s1") {
		t.Errorf("systems link of an Ethernet link: %+v", r)
	}
	if got := a.taken(); len(got) != 0 {
		t.Errorf("showing a link changed it: %q", got)
	}
	if r := ms("", "systems", "link", "y1", "link0", "--down", "--delay", "5ms"); r.code != 0 || !strings.Contains(r.stdout, "faults:  down, delay 5ms") {
		t.Errorf("systems link --down --delay: %+v", r)
	}
	r = ms("", "systems", "link", "y1", "link0", "--clean", "--output", "json")
	var st struct {
		Link model.SystemLink `json:"link"`
		UART map[string]any   `json:"uart"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Link.Faults != (model.LinkFaults{}) || st.UART["attached"] != true {
		t.Errorf("systems link --clean --output json: %+v", r)
	}
	if got := a.taken(); len(got) != 2 || got[0] != `POST /api/v1/systems/y1/links/link0 {"down":true,"delay":"5ms"}` || got[1] != "POST /api/v1/systems/y1/links/link0 {}" {
		t.Errorf("link changes sent %q", got)
	}
	for _, c := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--loss", "2"}, "msctl: systems link: faults.loss 2 is not a probability from 0 to 1"},
		{[]string{"--delay", "soon"}, `msctl: systems link: faults.delay "soon" is not a duration`},
		{[]string{"--clean", "--down"}, "msctl: systems link: --clean makes the link clean"},
	} {
		r := ms("", append([]string{"systems", "link", "y1", "link0"}, c.args...)...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, c.stderr) {
			t.Errorf("systems link %q: %+v, want exit 2 saying %q", c.args, r, c.stderr)
		}
	}
	if r := ms("", "systems", "link", "y1", "link9", "--down"); r.code != 1 || !strings.Contains(r.stderr, `system y1 has no link "link9"`) {
		t.Errorf("systems link of an unknown link: %+v", r)
	}
	if got := a.taken(); len(got) != 1 {
		t.Errorf("refused link changes were sent: %q", got)
	}

	// capture: stdout as it came, or a file.
	r = ms("", "systems", "capture", "y1", "link0", "--after", "3")
	var capture struct {
		Records []struct {
			Seq  int
			Data []byte
		}
		Next int
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &capture) != nil || capture.Next != 4 || len(capture.Records) != 1 || string(capture.Records[0].Data) != "PING 4\n" {
		t.Errorf("systems capture to stdout: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "lan0.pcap")
	r = ms("", "systems", "capture", "y1", "lan0", "-o", out, "--output", "json")
	pcap, _ := os.ReadFile(out)
	if r.code != 0 || string(pcap) != "\xd4\xc3\xb2\xa1pcap frames" || !strings.Contains(r.stdout, `"bytes": 15`) {
		t.Errorf("systems capture -o: %+v, file %q", r, pcap)
	}
	if got := a.taken(); len(got) != 2 || got[0] != "GET /api/v1/systems/y1/links/link0/capture?after=3 " || got[1] != "GET /api/v1/systems/y1/links/lan0/capture " {
		t.Errorf("captures asked %q", got)
	}

	// rm (and delete) each system given, saying which one failed.
	r = ms("", "systems", "rm", "y1", "y9")
	if r.code != 1 || !strings.Contains(r.stdout, "y1") || r.stderr != "msctl: system y9 not found\n" {
		t.Errorf("systems rm of one that exists and one that does not: %+v", r)
	}
	if r := ms("", "systems", "delete", "y1"); r.code != 0 {
		t.Errorf("systems delete: %+v", r)
	}
	if got := a.taken(); len(got) != 3 || got[0] != "DELETE /api/v1/systems/y1 " {
		t.Errorf("deletes sent %q", got)
	}

	// Usage errors.
	for _, c := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"systems"}, "msctl: missing subcommand"},
		{[]string{"systems", "boot"}, `msctl: unknown subcommand "boot"`},
		{[]string{"systems", "get"}, "msctl: systems get needs exactly one argument"},
		{[]string{"systems", "create", "a.json", "b.json"}, "msctl: systems create takes 0 to 1 arguments"},
		{[]string{"systems", "link", "y1"}, "msctl: systems link needs exactly 2 arguments"},
		{[]string{"systems", "capture", "y1", "link0", "--after", "-1"}, "msctl: invalid value"},
	} {
		r := ms("", c.args...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, c.stderr) || !strings.Contains(r.stderr, "usage: msctl systems") {
			t.Errorf("msctl %q: %+v, want exit 2 saying %q", c.args, r, c.stderr)
		}
	}
	if r := msctl(t, "", "systems", "--help"); r.code != 0 || !strings.Contains(r.stdout, "msctl systems capture ID LINK") {
		t.Errorf("systems --help: %+v", r)
	}
}
