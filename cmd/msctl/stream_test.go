package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// fakeJobs plays the programs and jobs API for msctl run: each job runs in
// session s1, whose console stream sends the banner and then ends with the
// session, once the job has answered its final state.
type fakeJobs struct {
	mu       sync.Mutex
	programs []model.Program
	uploads  int
	spec     model.JobSpec
	// next is the final job of the next run; stream says whether its
	// session's console can be attached to.
	next   model.Job
	stream bool
	// sent is closed once the console stream has sent the banner, done
	// once the job answered its final state.
	sent, done chan struct{}
	doneOnce   sync.Once
}

const (
	banner    = "MS-TEST-FW netduino2 ready\r\n"
	storedLog = banner + "printed after the stream ended\r\n"
)

func (f *fakeJobs) routes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /api/v1/programs": func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			httpapi.WriteJSON(w, 200, map[string]any{"programs": f.programs, "total": len(f.programs)})
		},
		"POST /api/v1/programs": func(w http.ResponseWriter, r *http.Request) {
			file, _, _ := r.FormFile("file")
			data, _ := io.ReadAll(file)
			sum := sha256.Sum256(data)
			f.mu.Lock()
			defer f.mu.Unlock()
			f.uploads++
			p := model.Program{ID: "p1", Name: r.FormValue("name"), SHA256: hex.EncodeToString(sum[:]), State: "stored"}
			f.programs = append(f.programs, p)
			httpapi.WriteJSON(w, 201, p)
		},
		"POST /api/v1/jobs": func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.spec = model.JobSpec{}
			json.NewDecoder(r.Body).Decode(&f.spec)
			f.sent, f.done, f.doneOnce = make(chan struct{}), make(chan struct{}), sync.Once{}
			if !f.stream {
				close(f.sent)
			}
			httpapi.WriteJSON(w, 201, model.Job{ID: "j1", JobSpec: f.spec, State: model.JobQueued})
		},
		"GET /api/v1/jobs/{id}": func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			j := model.Job{ID: "j1", JobSpec: f.spec, State: model.JobRunning, SessionID: "s1"}
			select {
			case <-f.sent:
				j = f.next
				j.ID, j.SessionID, j.ConsoleKey = "j1", "s1", model.JobConsoleKey("j1")
				f.doneOnce.Do(func() { close(f.done) })
			default:
			}
			httpapi.WriteJSON(w, 200, j)
		},
		"GET /api/v1/sessions/{id}/stream/console": func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			stream, sent, done := f.stream, f.sent, f.done
			f.mu.Unlock()
			if !stream {
				httpapi.WriteError(w, r, httpapi.NotFound("session s1 not found"))
				return
			}
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.Write(r.Context(), websocket.MessageBinary, []byte(banner))
			close(sent)
			<-done
			c.Close(websocket.StatusNormalClosure, "session deleted")
		},
		"GET /api/v1/jobs/{id}/console": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, storedLog)
		},
		"GET /api/v1/coverage/reports/{rid}": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "TN:\nSF:/src/main.c\nreport="+r.PathValue("rid")+" format="+r.URL.Query().Get("format")+"\nend_of_record\n")
		},
	}
}

func TestRunVerdicts(t *testing.T) {
	hermetic(t)
	f := &fakeJobs{}
	srv := api(t, f.routes())
	dir := t.TempDir()
	fw := filepath.Join(dir, "fw.elf")
	os.WriteFile(fw, []byte("\x7fELF image"), 0o644)
	script := filepath.Join(dir, "script.yaml")
	os.WriteFile(script, []byte("- wait_for: ready\n- send: \"count\\r\"\n- {wait_for: 'count=\\d+', timeout: 2s}\n"), 0o644)
	serial, lcov := filepath.Join(dir, "serial.log"), filepath.Join(dir, "lcov.info")
	common := []string{"run", fw, "--board", "netduino2", "--server", srv.URL, "--key", "ms_good"}

	for _, tc := range []struct {
		name   string
		job    model.Job
		stream bool
		args   []string
		code   int
	}{
		{"passed", model.Job{State: model.JobPassed, Reason: "console matched", CoverageReportID: "r1"}, true,
			[]string{"--expect", "ready (v1.0)", "--fail", "panic!", "--timeout", "5s", "--uart-script", script, "--coverage", lcov, "--serial-log", serial}, 0},
		{"failed", model.Job{State: model.JobFailed, Reason: "console matched fail_pattern"}, true, []string{"--fail", "MS-TEST-FW"}, 1},
		{"timed-out", model.Job{State: model.JobTimedOut, Reason: "timeout 1s passed"}, true, []string{"--expect", "never", "--timeout", "1s"}, exitTimeout},
		{"error-before-stream", model.Job{State: model.JobError, Reason: "power on: no runner"}, false, []string{"--expect", "x"}, 1},
		{"coverage-missing", model.Job{State: model.JobPassed, CoverageError: "its runner was lost"}, true, []string{"--expect", "x", "--coverage", lcov}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.mu.Lock()
			f.next, f.stream = tc.job, tc.stream
			f.mu.Unlock()
			r := msctl(t, "", append(common, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d: %+v", r.code, tc.code, r)
			}
			// The stream's bytes, then the rest from the stored log:
			// nothing twice, nothing missing.
			if r.stdout != storedLog {
				t.Errorf("stdout %q, want %q", r.stdout, storedLog)
			}
			if tc.name != "coverage-missing" && !strings.Contains(r.stderr, "msctl: job j1 "+string(tc.job.State)) {
				t.Errorf("stderr %q lacks the verdict", r.stderr)
			}
		})
	}
	if f.uploads != 1 {
		t.Errorf("the same image was uploaded %d times", f.uploads)
	}
	// What the passed run asked for, and what it wrote; --output json
	// streams no console.
	f.mu.Lock()
	f.next, f.stream = model.Job{State: model.JobPassed, CoverageReportID: "r1"}, false
	f.mu.Unlock()
	r := msctl(t, "", append(common, "--expect", "ready (v1.0)", "--fail", "panic!", "--timeout", "5s", "--uart-script", script, "--coverage", lcov, "--serial-log", serial, "--output", "json")...)
	var j model.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); r.code != 0 || err != nil || j.State != model.JobPassed {
		t.Fatalf("--output json: %v %+v", err, r)
	}
	want := model.JobSpec{
		Name: "msctl run fw.elf", ProgramID: "p1", BoardConfig: model.BoardConfig{Board: "netduino2"}, Timeout: "5s", Coverage: true,
		PassPattern: regexp.QuoteMeta("ready (v1.0)"), FailPattern: regexp.QuoteMeta("panic!"),
		UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "count\r"}, {WaitFor: `count=\d+`, Timeout: "2s"}},
	}
	if got, _ := json.Marshal(f.spec); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("job request %s\nwant %s", got, must(json.Marshal(want)))
	}
	if b, _ := os.ReadFile(serial); string(b) != storedLog {
		t.Errorf("serial log %q", b)
	}
	if b, _ := os.ReadFile(lcov); !strings.Contains(string(b), "report=r1 format=lcov") {
		t.Errorf("lcov file %q", b)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("- sned: x\n"), 0o644)
	if r := msctl(t, "", append(common, "--uart-script", bad)...); r.code != exitUsage || !strings.Contains(r.stderr, "--uart-script "+bad) {
		t.Errorf("a misspelt step: %+v", r)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestConsolePipe(t *testing.T) {
	hermetic(t)
	var mu sync.Mutex
	var gotQuery string
	srv := api(t, map[string]http.HandlerFunc{
		"GET /api/v1/sessions/{id}/stream/console": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			gotQuery = r.URL.RawQuery
			mu.Unlock()
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.Write(r.Context(), websocket.MessageBinary, []byte(banner))
			// Echo, as the test firmware does, until a CR.
			for {
				_, data, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if strings.HasPrefix(string(data), "off\n") {
					c.Write(r.Context(), websocket.MessageText, []byte(`{"error":"session is not running; input dropped"}`))
				}
				c.Write(r.Context(), websocket.MessageBinary, data)
				if strings.HasSuffix(string(data), "\r") {
					c.Close(websocket.StatusNormalClosure, "session deleted")
					return
				}
			}
		},
	})
	// stdin is not a terminal: piped to the UART, output to stdout,
	// until the session goes.
	r := msctl(t, "off\ncount\r", "console", "s1", "--port", "uart1", "--linger", "-1s", "--server", srv.URL, "--key", "ms_good")
	if r.code != 1 || r.stdout != banner+"off\ncount\r" {
		t.Fatalf("console: %+v", r)
	}
	if !strings.Contains(r.stderr, "msctl: {\"error\":\"session is not running; input dropped\"}") || !strings.HasSuffix(r.stderr, "msctl: console closed by the server: session deleted\n") {
		t.Fatalf("stderr %q", r.stderr)
	}
	if gotQuery != "port=uart1" {
		t.Fatalf("query %q", gotQuery)
	}
	if r := msctl(t, "", "console", "nope", "--server", srv.URL, "--key", "ms_bad"); r.code != 1 || r.stderr != "msctl: unknown API key\n" {
		t.Fatalf("refused console: %+v", r)
	}
}

func TestEventsResume(t *testing.T) {
	hermetic(t)
	var mu sync.Mutex
	var queries []string
	events := []string{
		`{"streamid":"1767225600000-0","specversion":"1.0","id":"e1","type":"io.machineserver.session.started.v1","source":"/sessions","subject":"s1","time":"2025-01-02T03:04:05Z","data":{"id":"s1","state":"running"}}`,
		`{"streamid":"1767225600001-0","specversion":"1.0","id":"e2","type":"io.machineserver.session.stopped.v1","source":"/sessions","subject":"s1","time":"2025-01-02T03:04:06Z","data":{"id":"s1","state":"stopped","reason":"powered off"}}`,
	}
	gap := `{"specversion":"1.0","id":"g1","type":"io.machineserver.stream.gap.v1","source":"/stream","data":{"after":"1767225600000-0","message":"events after 1767225600000-0 may be missing"}}`
	srv := api(t, map[string]http.HandlerFunc{
		"GET /api/v1/stream/events": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			n := len(queries)
			mu.Unlock()
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			if n == 1 {
				// One event, then the connection breaks.
				c.Write(r.Context(), websocket.MessageText, []byte(events[0]))
				c.Close(websocket.StatusGoingAway, "restarting")
				return
			}
			// The resumed stream says it may have lost some.
			c.Write(r.Context(), websocket.MessageText, []byte(gap))
			c.Write(r.Context(), websocket.MessageText, []byte(events[1]))
			c.Read(r.Context()) // until the client goes
		},
	})
	for output, want := range map[string][]string{"text": nil, "json": {events[0], gap, events[1]}} {
		t.Run(output, func(t *testing.T) {
			mu.Lock()
			queries = nil
			mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			var errw strings.Builder // read once run has returned
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"events", "--session", "s1", "--types", "io.machineserver.session.", "--output", output, "--server", srv.URL, "--key", "ms_good"},
					stdio{in: strings.NewReader(""), out: pw, err: &errw})
				pw.Close()
			}()
			var lines []string
			sc := bufio.NewScanner(pr)
			for len(lines) < max(2, len(want)) && sc.Scan() {
				lines = append(lines, sc.Text())
			}
			go io.Copy(io.Discard, pr)
			cancel()
			if code := <-done; code != exitInterrupted || len(lines) < max(2, len(want)) {
				t.Fatalf("exit %d after lines %q; stderr %q", code, lines, errw.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(queries) != 2 || queries[0] != "session=s1&types=io.machineserver.session." || queries[1] != "after=1767225600000-0&session=s1&types=io.machineserver.session." {
				t.Fatalf("queries %q", queries)
			}
			if !strings.Contains(errw.String(), "msctl: event stream lost") || (output == "text") != strings.Contains(errw.String(), "msctl: events after 1767225600000-0 may be missing\n") {
				t.Fatalf("stderr %q", errw.String())
			}
			if output == "json" {
				if strings.Join(lines, "\n") != strings.Join(want, "\n") {
					t.Fatalf("lines\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
				}
				return
			}
			if !strings.HasSuffix(lines[0], "  io.machineserver.session.started.v1  s1  running") || !strings.HasSuffix(lines[1], "  io.machineserver.session.stopped.v1  s1  stopped: powered off") {
				t.Fatalf("lines %q", lines)
			}
		})
	}
}
