package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// replayAPI is a fake server with recording r1 (ready) and r2 (still
// being recorded), the jobs that may name them, and replay session s9;
// calls logs the replays and power ons, created the last session asked for.
type replayAPI struct {
	mu      sync.Mutex
	calls   []string
	created map[string]any
}

func (f *replayAPI) log(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *replayAPI) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// record is what the last POST /api/v1/sessions asked for "record".
func (f *replayAPI) record() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created["record"]
}

func (f *replayAPI) routes(onStream http.HandlerFunc) map[string]http.HandlerFunc {
	recs := map[string]model.Recording{
		"r1": {ID: "r1", SessionID: "s1", JobID: "jfail", Backend: "qemu", Machine: "mps2-an385", ProgramID: "p1", State: model.RecordingReady,
			ReverseDebug: true, Size: 4096, ConsoleBytes: 20, Duration: "1.5s", Files: []model.RecordingFile{{Name: "console.log", Size: 20, SHA256: "ab"}}},
		"r2": {ID: "r2", SessionID: "s2", Machine: "mps2-an385", State: model.RecordingActive},
	}
	jobs := map[string]model.Job{
		"jfail":    {ID: "jfail", State: model.JobFailed, RecordingID: "r1", JobSpec: model.JobSpec{Record: true}},
		"jnorec":   {ID: "jnorec", State: model.JobFailed},
		"jpassed":  {ID: "jpassed", State: model.JobPassed, JobSpec: model.JobSpec{Record: true}},
		"jrunning": {ID: "jrunning", State: model.JobRunning, JobSpec: model.JobSpec{Record: true}},
	}
	recording := func(w http.ResponseWriter, r *http.Request) (model.Recording, bool) {
		rec, ok := recs[r.PathValue("rid")]
		if !ok {
			httpapi.WriteError(w, r, httpapi.NotFound("recording %s not found", r.PathValue("rid")))
		}
		return rec, ok
	}
	replay := model.Session{ID: "s9", Machine: "mps2-an385", ProgramID: "p1", ReplayOf: "r1", State: model.StateCreated}
	routes := map[string]http.HandlerFunc{
		"GET /api/v1/recordings": reply(map[string]any{"recordings": []model.Recording{recs["r1"], recs["r2"]}, "total": 2}),
		"GET /api/v1/recordings/{rid}": func(w http.ResponseWriter, r *http.Request) {
			if rec, ok := recording(w, r); ok {
				httpapi.WriteJSON(w, 200, rec)
			}
		},
		"GET /api/v1/recordings/{rid}/console": func(w http.ResponseWriter, r *http.Request) {
			rec, ok := recording(w, r)
			switch {
			case !ok:
			case rec.State != model.RecordingReady:
				httpapi.WriteError(w, r, httpapi.Conflict("recording %s is %s; its console is stored with it when the machine ends", rec.ID, rec.State))
			default:
				w.Header().Set("Content-Type", "application/octet-stream")
				io.WriteString(w, "ready\r\n\x00\xffvictim=7\r\n")
			}
		},
		"DELETE /api/v1/recordings/{rid}": func(w http.ResponseWriter, r *http.Request) {
			if rec, ok := recording(w, r); ok {
				httpapi.WriteJSON(w, 200, rec)
			}
		},
		"POST /api/v1/recordings/{rid}/sessions": func(w http.ResponseWriter, r *http.Request) {
			if _, ok := recording(w, r); !ok {
				return
			}
			var in struct{ Name string }
			json.NewDecoder(r.Body).Decode(&in)
			f.log("replay " + r.PathValue("rid") + " name=" + in.Name)
			s := replay
			s.Name = first(in.Name, "replay-r1")
			httpapi.WriteJSON(w, 201, s)
		},
		"GET /api/v1/jobs/{id}": func(w http.ResponseWriter, r *http.Request) {
			j, ok := jobs[r.PathValue("id")]
			if !ok {
				httpapi.WriteError(w, r, httpapi.NotFound("job %s not found", r.PathValue("id")))
				return
			}
			httpapi.WriteJSON(w, 200, j)
		},
		"POST /api/v1/sessions/{id}/poweron": func(w http.ResponseWriter, r *http.Request) {
			f.log("poweron " + r.PathValue("id") + " halted=" + r.URL.Query().Get("halted"))
			s := replay
			s.State = model.StateRunning
			httpapi.WriteJSON(w, 200, s)
		},
		"POST /api/v1/sessions": func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			f.created = nil
			json.NewDecoder(r.Body).Decode(&f.created)
			f.mu.Unlock()
			httpapi.WriteJSON(w, 201, model.Session{ID: "s1", Record: true})
		},
	}
	if onStream != nil {
		routes["GET /api/v1/sessions/{id}/stream/gdb"] = func(w http.ResponseWriter, r *http.Request) {
			if r.PathValue("id") != "s9" {
				httpapi.WriteError(w, r, httpapi.NotFound("session %s not found", r.PathValue("id")))
				return
			}
			onStream(w, r)
		}
	}
	return routes
}

func TestRecordings(t *testing.T) {
	hermetic(t)
	f := &replayAPI{}
	srv := api(t, f.routes(nil))
	key := []string{"--server", srv.URL, "--key", "ms_good"}
	m := func(args ...string) result { return msctl(t, "", append(args, key...)...) }

	r := m("recordings", "ls")
	if lines := strings.Split(r.stdout, "\n"); r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.HasPrefix(lines[1], "r1 ") || !strings.Contains(lines[1], "jfail") || !strings.Contains(lines[2], "recording") {
		t.Fatalf("recordings ls: %+v", r)
	}
	r = m("recordings", "ls", "--output", "json")
	var rs []model.Recording
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rs) != nil || len(rs) != 2 || rs[0].ID != "r1" || !rs[0].ReverseDebug {
		t.Fatalf("recordings ls --output json: %+v", r)
	}
	if r := m("recordings", "get", "r1"); r.code != 0 || !strings.Contains(r.stdout, "reverse debug: yes\n") || !strings.Contains(r.stdout, "file:          console.log 20 sha256:ab\n") {
		t.Fatalf("recordings get: %+v", r)
	}
	var rec model.Recording
	if r := m("recordings", "get", "r1", "--output", "json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &rec) != nil || rec.JobID != "jfail" {
		t.Fatalf("recordings get --output json: %+v", r)
	}
	// The console's bytes as stored, even with --output json.
	for _, out := range []string{"text", "json"} {
		if r := m("recordings", "console", "r1", "--output", out); r.code != 0 || r.stdout != "ready\r\n\x00\xffvictim=7\r\n" || r.stderr != "" {
			t.Fatalf("recordings console --output %s: %+v", out, r)
		}
	}
	if r := m("recordings", "rm", "r1", "nope"); r.code != 1 || r.stdout != "deleted r1\n" || r.stderr != "msctl: recording nope not found\n" {
		t.Fatalf("recordings rm of one that exists and one that does not: %+v", r)
	}
	if r := m("recordings", "rm", "r1", "--output", "json"); r.code != 0 || r.stdout != "{\n  \"deleted\": [\n    \"r1\"\n  ]\n}\n" {
		t.Fatalf("recordings rm --output json: %+v", r)
	}

	// The server's word for what it refuses, exit status 1; a bad command
	// line, exit status 2 with the usage.
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"recordings", "get", "nope"}, 1, "msctl: recording nope not found\n"},
		{[]string{"recordings", "console", "nope"}, 1, "msctl: recording nope not found\n"},
		{[]string{"recordings", "console", "r2"}, 1, "msctl: recording r2 is recording; its console is stored with it when the machine ends\n"},
		{[]string{"recordings"}, exitUsage, "msctl: missing subcommand\n\nusage: msctl recordings ls"},
		{[]string{"recordings", "play"}, exitUsage, `msctl: unknown subcommand "play"`},
		{[]string{"recordings", "ls", "r1"}, exitUsage, "msctl: recordings ls takes no arguments"},
		{[]string{"recordings", "get"}, exitUsage, "msctl: recordings get needs exactly one argument\n\nusage: msctl recordings ls"},
		{[]string{"recordings", "rm"}, exitUsage, "msctl: recordings rm needs at least 1 argument(s)"},
		{[]string{"recordings", "console", "r1", "r2"}, exitUsage, "msctl: recordings console takes exactly one argument"},
	} {
		r := m(tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, tc.stderr) {
			t.Errorf("msctl %q: exit %d, stderr %q; want %d, %q", tc.args, r.code, r.stderr, tc.code, tc.stderr)
		}
	}

	// sessions create --record asks for it; without, the field is not sent.
	if r := m("sessions", "create", "--board", "mps2-an385", "--record"); r.code != 0 || f.record() != true {
		t.Fatalf("sessions create --record: %+v, sent record=%v", r, f.record())
	}
	if r := m("sessions", "create", "--board", "mps2-an385"); r.code != 0 || f.record() != nil {
		t.Fatalf("sessions create: %+v, sent record=%v", r, f.record())
	}
}

func TestReplay(t *testing.T) {
	hermetic(t)
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		out   string // stdout
		err   string // in stderr
		calls []string
	}{
		{"recording", []string{"r1"}, 0, "s9\n", "msctl: session s9 replays recording r1 (running)\nmsctl: tunnel gdb with: msctl gdb s9 --listen 127.0.0.1:3333\n",
			[]string{"replay r1 name=", "poweron s9 halted="}},
		{"halted and named", []string{"--halted", "r1", "--name", "dbg"}, 0, "s9\n", "(running, halted at the reset vector)\n",
			[]string{"replay r1 name=dbg", "poweron s9 halted=true"}},
		{"a failed job's recording", []string{"jfail", "--halted"}, 0, "s9\n", "target extended-remote 127.0.0.1:3333'\n",
			[]string{"replay r1 name=", "poweron s9 halted=true"}},
		{"tunnel cannot listen", []string{"r1", "--gdb", "256.0.0.1:1"}, 1, "s9\n", "msctl: replay session s9 is on, but: listen tcp",
			[]string{"replay r1 name=", "poweron s9 halted="}},
		{"unknown id", []string{"0123456789abcdef"}, 1, "", "msctl: recording 0123456789abcdef not found\n", nil},
		{"job not recorded", []string{"jnorec"}, 1, "", `msctl: job jnorec kept no recording to replay: it was not recorded: create the job with "record": true` + "\n", nil},
		{"job passed", []string{"jpassed"}, 1, "", `it passed, and a passed job keeps none unless its keep_recording is "always"` + "\n", nil},
		{"job running", []string{"jrunning"}, 1, "", "it is running, and its recording is kept when it ends\n", nil},
		{"recording not ready", []string{"r2"}, 1, "", "msctl: recording r2 is recording", nil},
		{"no id", []string{}, exitUsage, "", "msctl: replay needs exactly one argument\n\nusage: msctl replay RID|JOB_ID", nil},
		{"empty id", []string{""}, exitUsage, "", "msctl: replay needs a RID or JOB_ID", nil},
		{"two ids", []string{"r1", "r2"}, exitUsage, "", "msctl: replay takes exactly one argument", nil},
		{"unknown flag", []string{"r1", "--fast"}, exitUsage, "", "msctl: flag provided but not defined: -fast", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &replayAPI{}
			routes := f.routes(nil)
			if tc.name == "recording not ready" {
				// r2 exists but is still being recorded: the server's 409.
				routes["POST /api/v1/recordings/{rid}/sessions"] = func(w http.ResponseWriter, r *http.Request) {
					httpapi.WriteError(w, r, httpapi.Conflict("recording %s is recording; only a stored (ready) recording replays", r.PathValue("rid")))
				}
			}
			srv := api(t, routes)
			r := msctl(t, "", append(append([]string{"replay"}, tc.args...), "--server", srv.URL, "--key", "ms_good")...)
			if r.code != tc.code || r.stdout != tc.out || !strings.Contains(r.stderr, tc.err) {
				t.Fatalf("msctl replay %q: %+v; want exit %d, stdout %q, stderr with %q", tc.args, r, tc.code, tc.out, tc.err)
			}
			if calls := f.seen(); strings.Join(calls, "|") != strings.Join(tc.calls, "|") {
				t.Fatalf("server calls %q, want %q", calls, tc.calls)
			}
		})
	}

	// JSON: the powered-on session, nothing else on stdout.
	f := &replayAPI{}
	srv := api(t, f.routes(nil))
	r := msctl(t, "", "replay", "r1", "--output", "json", "--server", srv.URL, "--key", "ms_good")
	var s model.Session
	if dec := json.NewDecoder(strings.NewReader(r.stdout)); r.code != 0 || dec.Decode(&s) != nil || dec.More() || s.ID != "s9" || s.ReplayOf != "r1" || s.State != model.StateRunning || r.stderr != "" {
		t.Fatalf("replay --output json: %+v", r)
	}
}

// TestReplayTunnel debugs a real (paused) QEMU through the tunnel replay
// --gdb opens to the replay session it made: the fake serves the gdb
// stream of s9 only.
func TestReplayTunnel(t *testing.T) {
	hermetic(t)
	m := gdbtest.Start(t)
	e := endpoint(t, m)
	f := &replayAPI{}
	srv := api(t, f.routes(func(w http.ResponseWriter, r *http.Request) { e.ServeWebSocket(w, r, "ws "+r.RemoteAddr) }))

	addr := start(t, "replay", "r1", "--halted", "--gdb", "127.0.0.1:0", "--server", srv.URL, "--key", "ms_good")
	gdbtest.Debug(t, m, addr)
	if calls := strings.Join(f.seen(), "|"); calls != "replay r1 name=|poweron s9 halted=true" {
		t.Fatalf("server calls %q", calls)
	}

	// With --output json stdout holds the session alone; the tunnel's hint
	// goes to stderr. Both streams are watched, so a hint in the wrong one
	// fails the test rather than hanging it.
	t.Run("json", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		outR, outW := io.Pipe()
		errR, errW := io.Pipe()
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"replay", "r1", "--gdb", "127.0.0.1:0", "--output", "json", "--server", srv.URL, "--key", "ms_good"},
				stdio{in: strings.NewReader(""), out: outW, err: errW})
			outW.Close()
			errW.Close()
		}()
		hint := make(chan string, 2)
		var stdout strings.Builder
		watch := func(name string, r io.Reader, keep *strings.Builder) {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if keep != nil {
					keep.WriteString(sc.Text() + "\n")
				}
				if strings.HasPrefix(sc.Text(), "connect with: gdb-multiarch") {
					hint <- name
				}
			}
		}
		stdoutDone := make(chan struct{})
		go func() { watch("stdout", outR, &stdout); close(stdoutDone) }()
		go watch("stderr", errR, nil)
		where := <-hint
		cancel()
		if code := <-done; code != 0 || where != "stderr" {
			t.Fatalf("exit %d, the tunnel's hint on %s", code, where)
		}
		<-stdoutDone
		var s model.Session
		if dec := json.NewDecoder(strings.NewReader(stdout.String())); dec.Decode(&s) != nil || dec.More() || s.ID != "s9" {
			t.Fatalf("stdout %q", stdout.String())
		}
	})
}
