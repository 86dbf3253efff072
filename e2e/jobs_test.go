package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/testenv"
)

// TestJobs runs test jobs end to end in both forms: real QEMU, the job
// queue on real Redis (distributed) and miniredis (standalone).
func TestJobs(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			rec := &eventstest.Recorder{}
			sink := httptest.NewServer(rec)
			defer sink.Close()
			pl := form.start(t, "MS_JOB_WORKERS=2", "K_SINK="+sink.URL)
			jobs(t, pl, rec)
		})
	}
}

func uploadFW(t testing.TB, pl *platform, board string) string {
	t.Helper()
	return uploadELF(t, pl, board, "fw.elf")
}

// uploadELF uploads the test firmware image name built for board.
func uploadELF(t testing.TB, pl *platform, board, name string) string {
	t.Helper()
	code, body := pl.upload(t, "jobfw", "elf", firmware(t, board, name), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	return decode(t, body)["id"].(string)
}

func intp(n int) *int { return &n }

// waitJob polls a job until it is final.
func (pl *platform) waitJob(t testing.TB, id string) model.Job {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var j model.Job
	for time.Now().Before(deadline) {
		j = model.Job{} // omitted fields must not keep an earlier poll's values
		pl.must(t, 200, "GET", "/api/v1/jobs/"+id, nil, &j)
		if j.State.Final() {
			return j
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s never ended: %+v", id, j)
	return j
}

func (pl *platform) waitJobState(t testing.TB, id string, want model.JobState) model.Job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var j model.Job
	for time.Now().Before(deadline) {
		j = model.Job{} // omitted fields must not keep an earlier poll's values
		pl.must(t, 200, "GET", "/api/v1/jobs/"+id, nil, &j)
		if j.State == want {
			return j
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s never reached %s: %+v", id, want, j)
	return j
}

func jobs(t *testing.T, pl *platform, rec *eventstest.Recorder) {
	prog := uploadFW(t, pl, "netduino2")
	board := model.BoardConfig{Board: "netduino2"}
	banner := `MS-TEST-FW netduino2 ready`
	cases := []struct {
		name   string
		spec   model.JobSpec
		state  model.JobState
		reason string
		exit   *int
	}{
		{"passes", model.JobSpec{PassPattern: banner, Timeout: "20s"}, model.JobPassed, "pass_pattern", nil},
		{"fail-pattern", model.JobSpec{PassPattern: "ALL TESTS PASSED", FailPattern: `MS-TEST-FW \w+`, Timeout: "20s"}, model.JobFailed, "fail_pattern", nil},
		{"times-out", model.JobSpec{PassPattern: "never printed", Timeout: "1s"}, model.JobTimedOut, `waiting for pass_pattern "never printed"`, nil},
		{"uart-script", model.JobSpec{Timeout: "20s", UARTScript: []model.Step{
			{WaitFor: "ready"}, {Send: "count\r"}, {WaitFor: `count=\d+`, Timeout: "5s"}, {Send: "count\r"}, {WaitFor: `count=\d+`},
		}}, model.JobPassed, "uart_script completed (5 steps)", nil},
		{"exit-code", model.JobSpec{Timeout: "20s", ExpectExitCode: intp(3), UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "exit 3\r"}}},
			model.JobPassed, "exited with status 3 as expected", intp(3)},
		{"wrong-exit-code", model.JobSpec{Timeout: "20s", ExpectExitCode: intp(0), UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "exit 3\r"}}},
			model.JobFailed, "exited with status 3, expected 0", intp(3)},
		{"exit-before-pass", model.JobSpec{Timeout: "20s", PassPattern: "never printed", UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "exit 0\r"}}},
			model.JobFailed, "the emulator ended before the job passed", intp(0)},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		c.spec.Name, c.spec.ProgramID, c.spec.BoardConfig = c.name, prog, board
		var j model.Job
		pl.must(t, 201, "POST", "/api/v1/jobs", c.spec, &j)
		if j.State != model.JobQueued || j.ID == "" {
			t.Fatalf("%s: created %+v", c.name, j)
		}
		ids[i] = j.ID
	}
	for i, c := range cases {
		j := pl.waitJob(t, ids[i])
		if j.State != c.state || !strings.Contains(j.Reason, c.reason) || j.Attempts != 1 {
			t.Errorf("%s: state %s attempts %d reason %q; want %s with %q", c.name, j.State, j.Attempts, j.Reason, c.state, c.reason)
		}
		if (c.exit == nil) != (j.ExitCode == nil) || (c.exit != nil && *c.exit != *j.ExitCode) {
			t.Errorf("%s: exit code %v, want %v", c.name, j.ExitCode, c.exit)
		}
		if j.ConsoleKey != model.JobConsoleKey(j.ID) || j.Artifacts["manifest"] != model.JobManifestKey(j.ID) || j.FinishedAt == nil || j.DurationMS <= 0 || j.SessionID == "" {
			t.Errorf("%s: artifacts and times: %+v", c.name, j)
		}
		if j.CoverageReportID != "" || j.CoverageError != "" {
			t.Errorf("%s: a job without coverage has coverage: %+v", c.name, j)
		}
		_, log := pl.call(t, "GET", "/api/v1/jobs/"+j.ID+"/console", nil, nil)
		// A job ends as soon as its verdict is known, possibly mid-line
		// (a fail pattern matched on part of the banner).
		if !strings.Contains(string(log), "MS-TEST-FW") {
			t.Errorf("%s: stored console %q lacks the banner", c.name, log)
		}
		if c.name == "uart-script" && strings.Count(string(log), "count=") != 2 {
			t.Errorf("uart-script: console %q, want two count= lines", log)
		}
	}

	t.Run("coverage", func(t *testing.T) { jobCoverage(t, pl, rec) })

	t.Run("cancel", func(t *testing.T) {
		var queued, running model.Job
		spec := model.JobSpec{ProgramID: prog, BoardConfig: board, PassPattern: "never printed", Timeout: "5m"}
		pl.must(t, 201, "POST", "/api/v1/jobs", spec, &running)
		pl.waitJobState(t, running.ID, model.JobRunning)
		var c model.Job
		pl.must(t, 202, "DELETE", "/api/v1/jobs/"+running.ID, nil, &c)
		if !c.CancelRequested {
			t.Fatalf("cancel of a running job: %+v", c)
		}
		j := pl.waitJob(t, running.ID)
		if j.State != model.JobCancelled || !strings.Contains(j.Reason, "cancelled while running") {
			t.Fatalf("cancelled running job: %+v", j)
		}
		// A queued one: two long jobs keep both workers busy.
		var busy [2]model.Job
		for i := range busy {
			pl.must(t, 201, "POST", "/api/v1/jobs", spec, &busy[i])
		}
		pl.must(t, 201, "POST", "/api/v1/jobs", spec, &queued)
		pl.must(t, 200, "DELETE", "/api/v1/jobs/"+queued.ID, nil, &c)
		if c.State != model.JobCancelled {
			t.Fatalf("cancel of a queued job: %+v", c)
		}
		for _, b := range busy {
			pl.call(t, "DELETE", "/api/v1/jobs/"+b.ID, nil, nil)
			if j := pl.waitJob(t, b.ID); j.State != model.JobCancelled {
				t.Fatalf("busy job: %+v", j)
			}
		}
		if j := pl.waitJob(t, queued.ID); j.State != model.JobCancelled || j.Attempts != 0 || j.StartedAt != nil {
			t.Fatalf("a job cancelled while queued ran: %+v", j)
		}
		pl.must(t, 409, "DELETE", "/api/v1/jobs/"+queued.ID, nil, nil)
	})

	t.Run("bad-input", func(t *testing.T) {
		for _, c := range []struct {
			body   map[string]any
			status int
			says   string
		}{
			{map[string]any{"program_id": prog, "board_config": board, "pass_pattern": "(unclosed"}, 400, "pass_pattern is not a valid regular expression"},
			{map[string]any{"program_id": prog, "board_config": board, "pass_pattern": "x", "timeout": "9999h"}, 400, "timeout must be from 100ms to 30m0s"},
			{map[string]any{"program_id": "0123456789abcdef", "board_config": board, "pass_pattern": "x"}, 422, "does not exist"},
			{map[string]any{"program_key": "nowhere/fw.elf", "board_config": board, "pass_pattern": "x"}, 422, "program_key"},
			{map[string]any{"program_id": prog, "board_config": map[string]string{"board": "pdp11"}, "pass_pattern": "x"}, 422, "board_config"},
			{map[string]any{"board_config": board, "pass_pattern": "x"}, 400, "program_id or program_key is required"},
		} {
			code, body := pl.call(t, "POST", "/api/v1/jobs", c.body, nil)
			var e apiError
			json.Unmarshal(body, &e)
			if code != c.status || !strings.Contains(e.Error.Message, c.says) {
				t.Errorf("%v: %d %s; want %d saying %q", c.body, code, body, c.status, c.says)
			}
		}
	})

	t.Run("event-twice", func(t *testing.T) {
		spec := model.JobSpec{ProgramID: prog, BoardConfig: board, PassPattern: banner, Timeout: "20s"}
		id := fmt.Sprintf("ci-%d", time.Now().UnixNano())
		var a, b model.Job
		postJobEvent(t, pl.events["jobs"], id, spec, &a)
		postJobEvent(t, pl.events["jobs"], id, spec, &b)
		if a.ID == "" || a.ID != b.ID {
			t.Fatalf("the same event twice gave jobs %q and %q", a.ID, b.ID)
		}
		if j := pl.waitJob(t, a.ID); j.State != model.JobPassed || j.Attempts != 1 {
			t.Fatalf("event job: %+v", j)
		}
		// Delivered again after it ran: still the same job, not run again.
		var c model.Job
		postJobEvent(t, pl.events["jobs"], id, spec, &c)
		if c.ID != a.ID || c.State != model.JobPassed || c.Attempts != 1 {
			t.Fatalf("late duplicate: %+v", c)
		}
		var l struct {
			Jobs  []model.Job `json:"jobs"`
			Total int         `json:"total"`
		}
		pl.must(t, 200, "GET", "/api/v1/jobs?state=passed&page_size=100", nil, &l)
		n := 0
		for _, j := range l.Jobs {
			if j.ID == a.ID {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("job %s listed %d times", a.ID, n)
		}
	})

	t.Run("rule", func(t *testing.T) {
		// program.stored is judged by the stored program, not by what the
		// event says: this program was uploaded through the API, so it
		// has no bucket key and runs no rule, whatever key the event
		// claims. (A rule's job for a bucket upload runs end to end in
		// TestObjectUploadTrigger.)
		var r model.JobRule
		pl.must(t, 201, "POST", "/api/v1/jobs/rules", map[string]any{"prefix": "ci/netduino2/",
			"template": model.JobSpec{BoardConfig: board, PassPattern: banner, Timeout: "20s"}}, &r)
		var p map[string]any
		pl.must(t, 200, "GET", "/api/v1/programs/"+prog, nil, &p)
		p["source_key"] = "ci/netduino2/build-7/fw.elf"
		var out events.JobsTriggered
		postEvent(t, pl.events["jobs"], "n-1", events.TypeProgramStored, p, events.TypeJobTriggered, &out)
		if out.ProgramID != prog || out.SourceKey != "" || len(out.Jobs) != 0 {
			t.Fatalf("program.stored claiming a key the program was not stored from: %+v", out)
		}
		pl.must(t, 204, "DELETE", "/api/v1/jobs/rules/"+r.ID, nil, nil)
	})

	t.Run("other-tenant", func(t *testing.T) {
		// Another tenant's events never reach this tenant's programs or
		// jobs, and the same event id gives that tenant its own job.
		var key struct {
			Key string `json:"key"`
		}
		pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "jobs-acme", "tenant": "acme", "scopes": []string{"read", "write"}}, &key)
		acme := "ApiKey " + key.Key
		var p map[string]any
		pl.must(t, 200, "GET", "/api/v1/programs/"+prog, nil, &p)
		if code, body := postEventAs(t, pl.events["jobs"], acme, "acme", "o-1", events.TypeProgramStored, p); code != 422 || strings.Contains(body, `"jobs"`) {
			t.Fatalf("program.stored of another tenant's program: %d %s", code, body)
		}
		own := uploadAs(t, pl, acme, firmware(t, "netduino2", "fw.elf"))
		id := fmt.Sprintf("shared-%d", time.Now().UnixNano())
		var mine model.Job
		postJobEvent(t, pl.events["jobs"], id, model.JobSpec{ProgramID: prog, BoardConfig: board, PassPattern: banner, Timeout: "20s"}, &mine)
		code, body := postEventAs(t, pl.events["jobs"], acme, "acme", id, events.TypeJobCreate, model.JobSpec{ProgramID: own, BoardConfig: board, PassPattern: banner, Timeout: "20s"})
		var theirs model.Job
		json.Unmarshal([]byte(body), &theirs)
		if code != 200 || theirs.ID == "" || theirs.ID == mine.ID || theirs.Tenant != "acme" {
			t.Fatalf("the same event id from another tenant: %d %s (default's job %s)", code, body, mine.ID)
		}
		for _, j := range []string{mine.ID, theirs.ID} {
			pl.call(t, "DELETE", "/api/v1/jobs/"+j, nil, nil)
			pl.as(t, acme, "DELETE", "/api/v1/jobs/"+j, nil)
		}
		// A tenant's stats are its own jobs: no queue, no worker names.
		code, b := pl.as(t, acme, "GET", "/api/v1/jobs/stats", nil)
		if code != 200 || strings.Contains(string(b), `"queue"`) || strings.Contains(string(b), `"passed"`) {
			t.Fatalf("another tenant's stats: %d %s", code, b)
		}
		pl.waitJob(t, mine.ID)
	})

	// Each job deletes its session (and so its emulator) after storing
	// the result, then acks its queue entry.
	waitNoEmulators(t, pl)
	var st struct {
		Queue struct {
			Depth, Pending int64
		} `json:"queue"`
		States  map[string]int `json:"states"`
		Workers int            `json:"workers"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		pl.must(t, 200, "GET", "/api/v1/jobs/stats", nil, &st)
		if st.Queue.Pending == 0 || time.Now().After(deadline) {
			break
		}
	}
	if st.Queue.Depth != 0 || st.Queue.Pending != 0 || st.States["passed"] < 4 || st.States["running"] != 0 || st.Workers != 2 {
		t.Errorf("stats at the end: %+v", st)
	}
}

// jobCoverage runs the coverage firmware in two jobs with coverage: one
// whose firmware exits (its counts are final) and one that passes while
// the firmware runs. Each job stores its report before its session goes,
// links it from the job and its job.finished event, and the reports read
// and merge like any others; another tenant reads neither.
func jobCoverage(t *testing.T, pl *platform, rec *eventstest.Recorder) {
	m := markers(t)
	prog := uploadELF(t, pl, "netduino2", "cov.elf")
	board := model.BoardConfig{Board: "netduino2"}
	specs := []model.JobSpec{
		// 'b' takes the input branch once (echoed once handled), 'q' exits.
		{Name: "cov-exit", ProgramID: prog, BoardConfig: board, Timeout: "20s", Coverage: true, ExpectExitCode: intp(0),
			UARTScript: []model.Step{{WaitFor: "COV ready"}, {Send: "b"}, {WaitFor: "b"}, {Send: "q"}}},
		{Name: "cov-running", ProgramID: prog, BoardConfig: board, Timeout: "20s", Coverage: true, PassPattern: "COV ready"},
	}
	onB := []uint64{1, 0}
	var reports []string
	for i, spec := range specs {
		var j model.Job
		pl.must(t, 201, "POST", "/api/v1/jobs", spec, &j)
		j = pl.waitJob(t, j.ID)
		if j.State != model.JobPassed || j.CoverageReportID == "" || j.CoverageError != "" {
			t.Fatalf("%s: %+v", spec.Name, j)
		}
		if ev := finishedEvent(t, rec, j.ID); ev.CoverageReportID != j.CoverageReportID {
			t.Fatalf("%s: job.finished links report %q, the job %q", spec.Name, ev.CoverageReportID, j.CoverageReportID)
		}
		path := "/api/v1/coverage/reports/" + j.CoverageReportID
		var rep events.CoverageReport
		pl.must(t, 200, "GET", path, nil, &rep)
		if rep.ProgramID != prog || len(rep.Sessions) != 1 || rep.Sessions[0] != j.SessionID || rep.Artifacts["lcov"] == "" {
			t.Fatalf("%s: stored report %+v of job %+v", spec.Name, rep, j)
		}
		r := pl.coverageJSON(t, path)
		for name, want := range map[string]uint64{"loop-body": 7, "classify-then": 2, "classify-else": 0, "on-b": onB[i]} {
			if got := r.line(t, m[name]); got != want {
				t.Errorf("%s: line %s ran %d times, want %d", spec.Name, name, got, want)
			}
		}
		if lcov := string(pl.coverage(t, path, "lcov")); !strings.Contains(lcov, "covtest.c") || !strings.Contains(lcov, fmt.Sprintf("\nDA:%d,%d\n", m["on-b"], onB[i])) {
			t.Errorf("%s: lcov of the job's report:\n%s", spec.Name, lcov)
		}
		reports = append(reports, j.CoverageReportID)
	}

	var merged events.CoverageReport
	pl.must(t, 201, "POST", "/api/v1/coverage/merge", map[string]any{"report_ids": reports}, &merged)
	r := pl.coverageJSON(t, "/api/v1/coverage/reports/"+merged.ID)
	if got, gotB := r.line(t, m["loop-body"]), r.line(t, m["on-b"]); got != 14 || gotB != 1 {
		t.Errorf("merged job reports: loop-body %d, on-b %d; want 14 and 1", got, gotB)
	}

	var key struct {
		Key string `json:"key"`
	}
	pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "jobs-cov-acme", "tenant": "acme", "scopes": []string{"read", "write"}}, &key)
	acme := "ApiKey " + key.Key
	for _, rid := range reports {
		if code, b := pl.as(t, acme, "GET", "/api/v1/coverage/reports/"+rid, nil); code != 404 {
			t.Errorf("another tenant reads job report %s: %d %s", rid, code, b)
		}
		if code, b := pl.as(t, acme, "GET", "/api/v1/coverage/reports/"+rid+"?format=lcov", nil); code != 404 {
			t.Errorf("another tenant reads the lcov of job report %s: %d %s", rid, code, b)
		}
	}
	if code, b := pl.as(t, acme, "POST", "/api/v1/coverage/merge", map[string]any{"report_ids": reports}); code != 404 {
		t.Errorf("another tenant merges job reports: %d %s", code, b)
	}
}

// finishedEvent waits for the job.finished event of job id and answers its
// data.
func finishedEvent(t *testing.T, rec *eventstest.Recorder, id string) model.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n := 1; ; n++ {
		evs, err := rec.Wait(ctx, events.TypeJobFinished, n)
		if err != nil {
			t.Fatalf("no job.finished event of job %s: %v", id, err)
		}
		if e := evs[n-1]; e.Subject() == id {
			var j model.Job
			if err := e.DataAs(&j); err != nil {
				t.Fatal(err)
			}
			return j
		}
	}
}

func waitNoEmulators(t testing.TB, pl *platform) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(emulators(pl.socketDir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU left after the jobs ended: %v", emulators(pl.socketDir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postEventAs sends one binary-mode event with credential h and tenant
// attribute tenant (the standalone /events/* authenticate; a function's
// root takes the attribute, as the in-cluster Broker sends it).
func postEventAs(t *testing.T, url, h, tenant, id, typ string, data any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(data)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", h)
	for k, v := range map[string]string{"specversion": "1.0", "id": id, "source": "/e2e/ci", "type": typ, "tenant": tenant} {
		req.Header.Set("ce-"+k, v)
	}
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	return resp.StatusCode, body.String()
}

// postJobEvent sends a job.create command with the given event id.
func postJobEvent(t *testing.T, url, id string, spec model.JobSpec, out *model.Job) {
	t.Helper()
	postEvent(t, url, id, events.TypeJobCreate, spec, events.TypeJobQueued, out)
}

// postEvent sends one structured-mode event with the given id and expects
// a 200 with a reply of type reply.
func postEvent(t *testing.T, url, id, typ string, data any, reply string, out any) {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("/e2e/ci")
	e.SetType(typ)
	e.SetData(cloudevents.ApplicationJSON, data)
	b, _ := json.Marshal(e)
	resp, err := http.Post(url, "application/cloudevents+json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Ce-Type") != reply {
		t.Fatalf("%s event: %d %v %s", typ, resp.StatusCode, resp.Header, body.String())
	}
	if err := json.Unmarshal(body.Bytes(), out); err != nil {
		t.Fatal(err)
	}
}

// TestJobWorkerKilled kills the jobs process running a job (SIGKILL, no
// chance to clean up) while a second jobs process waits: the job's lease
// lapses, the survivor reclaims it, deletes the dead attempt's session and
// runs it again to a single pass.
func TestJobWorkerKilled(t *testing.T) {
	pl := startDistributed(t, "MS_JOB_LEASE=2s", "MS_JOB_WORKERS=1")
	port := testenv.FreePort(t)
	second := startProc(t, "jobs", append([]string{fmt.Sprintf("PORT=%d", port)}, pl.env...))
	secondURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHealthy(t, secondURL, second)
	procs := map[int]*proc{second.cmd.Process.Pid: second}
	for _, p := range pl.procs {
		if p.name == "jobs" {
			procs[p.cmd.Process.Pid] = p
		}
	}
	prog := uploadFW(t, pl, "netduino2")
	var j model.Job
	// "tick 30" comes 3 s after boot: long enough to kill the worker.
	pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{ProgramID: prog, BoardConfig: model.BoardConfig{Board: "netduino2"},
		PassPattern: `tick 30\r\n`, Timeout: "30s"}, &j)
	j = pl.waitJobState(t, j.ID, model.JobRunning)
	for j.SessionID == "" {
		pl.must(t, 200, "GET", "/api/v1/jobs/"+j.ID, nil, &j)
	}
	var pid int
	fmt.Sscanf(j.Worker[strings.LastIndex(j.Worker[:strings.LastIndex(j.Worker, "-")], "-")+1:], "%d", &pid)
	victim, ok := procs[pid]
	if !ok {
		t.Fatalf("worker %q is none of the jobs processes %v", j.Worker, procs)
	}
	for len(emulators(pl.socketDir)) == 0 {
		time.Sleep(5 * time.Millisecond) // the job's emulator is being started
	}
	syscall.Kill(pid, syscall.SIGKILL)
	victim.cmd.Wait()
	survivor := secondURL
	if victim == second {
		survivor = pl.fnURLs["jobs"]
	}
	api := &platform{name: "survivor", base: survivor}
	final := api.waitJob(t, j.ID)
	if final.State != model.JobPassed || final.Attempts != 2 || final.Worker == j.Worker {
		t.Fatalf("after killing its worker: %+v", final)
	}
	_, log := api.call(t, "GET", "/api/v1/jobs/"+j.ID+"/console", nil, nil)
	if n := strings.Count(string(log), "MS-TEST-FW"); n != 1 {
		t.Errorf("stored console has %d boots, want the last attempt's one:\n%s", n, log)
	}
	// The dead attempt's session (and emulator) is deleted by the worker
	// that reclaimed the job, the last one by the worker that ran it.
	waitNoEmulators(t, pl)
}
