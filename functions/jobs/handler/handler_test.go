package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/jobs/job"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/state"
	"github.com/machineserver/machineserver/shared/testenv"
)

type fixture struct {
	h   *Handler
	st  *state.Store
	q   *queue.Queue
	srv *httptest.Server
}

// setup serves the handler over HTTP on real Redis (no runner: the tests
// here never start a worker).
func setup(t *testing.T) *fixture {
	ctx := context.Background()
	st, err := state.Open(ctx, testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, _ := blob.NewFS(t.TempDir())
	log := slog.New(slog.DiscardHandler)
	q, err := st.Queue(ctx, QueueConfig(time.Minute, 3))
	if err != nil {
		t.Fatal(err)
	}
	sh := session.New(session.Deps{State: st, Blobs: blobs, Publisher: events.Nop, RunnerToken: "t", Log: log})
	h := New(Deps{State: st, Blobs: blobs, Sessions: sh, Queue: q, Publisher: checked{t}, Log: log})
	mux := http.NewServeMux()
	httpapi.Mount(mux, h.Routes()...)
	ev, err := h.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("POST /events", ev)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{h: h, st: st, q: q, srv: srv}
}

func (f *fixture) program(t *testing.T, sourceKey string) model.Program {
	p := model.Program{ID: model.NewID(), Name: "fw", Format: model.FormatELF, Size: 1, SHA256: strings.Repeat("0", 64),
		SourceKey: sourceKey, CreatedAt: time.Now().UTC()}
	if err := f.st.PutProgram(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) do(t *testing.T, method, path, body string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatalf("%s: %v", buf.String(), err)
		}
	}
	return resp.StatusCode, buf.String()
}

func TestCreateValidation(t *testing.T) {
	f := setup(t)
	p := f.program(t, "")
	board := `"board_config":{"board":"netduino2"}`
	for _, tc := range []struct {
		name, body string
		status     int
		says       string
	}{
		{"no program", `{` + board + `,"pass_pattern":"ok"}`, 400, "program_id or program_key is required"},
		{"both programs", `{"program_id":"` + p.ID + `","program_key":"a/b",` + board + `,"pass_pattern":"ok"}`, 400, "not both"},
		{"bad program id", `{"program_id":"xyz",` + board + `,"pass_pattern":"ok"}`, 400, "16 hex digits"},
		{"no board", `{"program_id":"` + p.ID + `","pass_pattern":"ok"}`, 400, "board_config is required"},
		{"invalid pass regex", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"(unclosed"}`, 400, "pass_pattern is not a valid regular expression"},
		{"invalid fail regex", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","fail_pattern":"a**"}`, 400, "fail_pattern is not a valid regular expression"},
		{"absurd timeout", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","timeout":"1000h"}`, 400, "timeout must be from 100ms to 30m0s"},
		{"tiny timeout", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","timeout":"1ms"}`, 400, "from 100ms"},
		{"timeout not a duration", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","timeout":"soon"}`, 400, "must be a duration"},
		{"no criterion", `{"program_id":"` + p.ID + `",` + board + `}`, 400, "a job needs a way to pass"},
		{"empty step", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","uart_script":[{}]}`, 400, "uart_script[0] must have exactly one of send"},
		{"step with both", `{"program_id":"` + p.ID + `",` + board + `,"uart_script":[{"send":"x","wait_for":"y"}]}`, 400, "uart_script[0] must have exactly one"},
		{"bad step regex", `{"program_id":"` + p.ID + `",` + board + `,"uart_script":[{"send":"x"},{"wait_for":"[z"}]}`, 400, "uart_script[1].wait_for is not a valid regular expression"},
		{"bad step timeout", `{"program_id":"` + p.ID + `",` + board + `,"uart_script":[{"wait_for":"y","timeout":"99h"}]}`, 400, "uart_script[0].timeout must be from"},
		{"unknown field", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","expect":"x"}`, 400, "expect"},
		{"repeat 0", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","repeat":0}`, 400, "repeat must be from 1 to 10"},
		{"repeat 11", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","repeat":11}`, 400, "repeat must be from 1 to 10"},
		{"repeat not a number", `{"program_id":"` + p.ID + `",` + board + `,"pass_pattern":"ok","repeat":"5"}`, 400, "repeat"},
		{"unknown program", `{"program_id":"0123456789abcdef",` + board + `,"pass_pattern":"ok"}`, 422, "does not exist"},
		{"unknown program key", `{"program_key":"ci/none.elf",` + board + `,"pass_pattern":"ok"}`, 422, "no program was registered from program_key"},
	} {
		code, body := f.do(t, "POST", "/api/v1/jobs", tc.body, nil)
		if code != tc.status || !strings.Contains(body, tc.says) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s; want %d saying %q", tc.name, code, body, tc.status, tc.says)
		}
	}
	if code, body := f.do(t, "GET", "/api/v1/jobs?state=bogus", "", nil); code != 400 || !strings.Contains(body, "timed_out") {
		t.Errorf("list by a bogus state: %d %s", code, body)
	}
	if code, _ := f.do(t, "GET", "/api/v1/jobs/0123456789abcdef", "", nil); code != 404 {
		t.Errorf("unknown job: %d", code)
	}
}

// A deterministic job needs a board whose capabilities say it runs on the
// instruction counter; the 422 says why the board does not.
func TestCreateDeterministic(t *testing.T) {
	f := setup(t)
	p := f.program(t, "")
	caps := board.Build("7.2.0", "q", []string{"mps2-an385", "arduino-uno"}, []string{"cortex-m3", "avr5"}, map[string]board.Probe{
		"mps2-an385":  {Clock: []string{board.FeatureDeterministic}},
		"arduino-uno": {Missing: map[string]string{board.FeatureDeterministic: "qemu-system-avr: Bad icount read"}},
	})
	if err := f.st.RegisterRunner(context.Background(), state.Runner{ID: "r1", URL: "http://127.0.0.1:1", Capacity: 1, Capabilities: caps}, time.Minute); err != nil {
		t.Fatal(err)
	}
	spec := func(b string) string {
		return `{"program_id":"` + p.ID + `","board_config":{"board":"` + b + `"},"expect_exit_code":0,"deterministic":true,"repeat":5}`
	}
	code, body := f.do(t, "POST", "/api/v1/jobs", spec("arduino-uno"), nil)
	if code != 422 || !strings.Contains(body, "board arduino-uno does not support deterministic: qemu-system-avr: Bad icount read") {
		t.Errorf("deterministic on arduino-uno: %d %s", code, body)
	}
	var j model.Job
	if code, body := f.do(t, "POST", "/api/v1/jobs", spec("mps2-an385"), &j); code != 201 || !j.Deterministic || j.Repeats() != 5 {
		t.Errorf("deterministic on mps2-an385: %d %s", code, body)
	}
}

func TestCreateQueueAndCancel(t *testing.T) {
	f := setup(t)
	p := f.program(t, "ci/fw/netduino2.elf")
	var j model.Job
	code, body := f.do(t, "POST", "/api/v1/jobs", `{"program_key":"ci/fw/netduino2.elf","board_config":{"board":"netduino2"},"pass_pattern":"ready"}`, &j)
	if code != 201 || j.State != model.JobQueued || j.ProgramID != p.ID || j.Timeout != "30s" {
		t.Fatalf("create: %d %s", code, body)
	}
	st, _ := f.q.Stats(context.Background())
	if st.Depth != 1 {
		t.Fatalf("queue after create: %+v", st)
	}
	var l List
	f.do(t, "GET", "/api/v1/jobs?state=queued", "", &l)
	if l.Total != 1 || l.Jobs[0].ID != j.ID {
		t.Fatalf("queued list: %+v", l)
	}
	if code, body := f.do(t, "GET", "/api/v1/jobs/"+j.ID+"/console", "", nil); code != 409 {
		t.Fatalf("console of a queued job: %d %s", code, body)
	}
	var c model.Job
	if code, body := f.do(t, "DELETE", "/api/v1/jobs/"+j.ID, "", &c); code != 200 || c.State != model.JobCancelled {
		t.Fatalf("cancel queued: %d %s", code, body)
	}
	if code, body := f.do(t, "DELETE", "/api/v1/jobs/"+j.ID, "", nil); code != 409 || !strings.Contains(body, "cancelled") {
		t.Fatalf("cancel again: %d %s", code, body)
	}
	var s Stats
	f.do(t, "GET", "/api/v1/jobs/stats", "", &s)
	if s.States[model.JobCancelled] != 1 || s.Queue != nil {
		t.Fatalf("stats: %+v", s)
	}
}

func TestCreateEventTwiceIsOneJob(t *testing.T) {
	f := setup(t)
	p := f.program(t, "")
	e := cloudevents.NewEvent()
	e.SetID("ci-run-42")
	e.SetSource("/ci/test")
	e.SetType(events.TypeJobCreate)
	e.SetData(cloudevents.ApplicationJSON, model.JobSpec{ProgramID: p.ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "ready"})
	var ids []string
	for range 2 {
		b, _ := json.Marshal(e)
		req, _ := http.NewRequest("POST", f.srv.URL+"/events", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var j model.Job
		json.NewDecoder(resp.Body).Decode(&j)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Ce-Type") != events.TypeJobQueued {
			t.Fatalf("event: %d %v", resp.StatusCode, resp.Header)
		}
		ids = append(ids, j.ID)
	}
	if ids[0] != ids[1] || ids[0] == "" {
		t.Fatalf("the same event gave jobs %v", ids)
	}
	all, total, _ := f.st.ListJobs(context.Background(), nil, 0, 10)
	st, _ := f.q.Stats(context.Background())
	if total != 1 || len(all) != 1 || st.Depth != 1 {
		t.Fatalf("after the same event twice: %d jobs, queue %+v", total, st)
	}
}

func TestRules(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	var r model.JobRule
	if code, body := f.do(t, "POST", "/api/v1/jobs/rules", `{"prefix":"ci/","template":{"board_config":{"board":"netduino2"},"pass_pattern":"(x"}}`, nil); code != 400 || !strings.Contains(body, "template: pass_pattern") {
		t.Fatalf("bad template: %d %s", code, body)
	}
	if code, body := f.do(t, "POST", "/api/v1/jobs/rules", `{"prefix":"ci/","template":{"board_config":{"board":"netduino2"},"pass_pattern":"ready","timeout":"5s"}}`, &r); code != 201 {
		t.Fatalf("rule: %d %s", code, body)
	}
	p := f.program(t, "ci/a.elf")
	for range 2 { // a duplicate notification
		js, err := f.h.OnProgramStored(ctx, p, "ci/a.elf")
		if err != nil || len(js) != 1 || js[0].RuleID != r.ID || js[0].ProgramID != p.ID {
			t.Fatalf("on stored: %+v %v", js, err)
		}
	}
	if js, _ := f.h.OnProgramStored(ctx, p, "other/a.elf"); len(js) != 0 {
		t.Fatalf("a key outside the prefix queued %v", js)
	}
	_, total, _ := f.st.ListJobs(ctx, nil, 0, 10)
	if st, _ := f.q.Stats(ctx); total != 1 || st.Depth != 1 {
		t.Fatalf("jobs %d, queue %+v", total, st)
	}
	if code, _ := f.do(t, "DELETE", "/api/v1/jobs/rules/"+r.ID, "", nil); code != 204 {
		t.Fatalf("delete rule: %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/api/v1/jobs/rules/"+r.ID, "", nil); code != 404 {
		t.Fatalf("delete rule again: %d", code)
	}
}

// postSample posts an event sample from events/ (structured mode), with its
// data changed by edit if set, and returns the status and the reply.
func (f *fixture) postSample(t *testing.T, typ string, edit func(data map[string]any)) (int, string, string) {
	t.Helper()
	b, err := events.Sample(typ)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		var e map[string]any
		json.Unmarshal(b, &e)
		edit(e["data"].(map[string]any))
		b, _ = json.Marshal(e)
	}
	resp, err := http.Post(f.srv.URL+"/events", "application/cloudevents+json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header.Get("Ce-Type"), buf.String()
}

func TestCDEvents(t *testing.T) {
	f := setup(t)
	p := f.program(t, "ci/netduino2/fw.elf")
	var ids []string
	for range 2 {
		code, typ, body := f.postSample(t, events.TypeCDTestSuiteRunQueued, nil)
		var j model.Job
		json.Unmarshal([]byte(body), &j)
		if code != 200 || typ != events.TypeJobQueued || j.ProgramID != p.ID || j.BoardConfig.Board != "netduino2" || j.Name != "smoke" {
			t.Fatalf("testsuiterun.queued: %d %s %s", code, typ, body)
		}
		ids = append(ids, j.ID)
	}
	if ids[0] != ids[1] {
		t.Fatalf("the same testsuiterun.queued twice gave jobs %v", ids)
	}
	code, _, body := f.postSample(t, events.TypeCDTestSuiteRunQueued, func(d map[string]any) { delete(d, "customData") })
	if code != 400 || !strings.Contains(body, "customData") {
		t.Fatalf("without customData: %d %s", code, body)
	}

	var r model.JobRule
	f.do(t, "POST", "/api/v1/jobs/rules", `{"prefix":"ci/netduino2/","template":{"board_config":{"board":"netduino2"},"pass_pattern":"ready"}}`, &r)
	var jobs []string
	for range 2 {
		code, typ, body := f.postSample(t, events.TypeCDArtifactPublished, nil)
		var out events.JobsTriggered
		json.Unmarshal([]byte(body), &out)
		if code != 200 || typ != events.TypeJobTriggered || out.ProgramID != p.ID || len(out.Jobs) != 1 {
			t.Fatalf("artifact.published: %d %s %s", code, typ, body)
		}
		jobs = append(jobs, out.Jobs[0])
	}
	if jobs[0] != jobs[1] {
		t.Fatalf("the same artifact twice gave jobs %v", jobs)
	}
	code, _, body = f.postSample(t, events.TypeCDArtifactPublished, func(d map[string]any) {
		d["subject"].(map[string]any)["id"] = "pkg:generic/ci/unknown/fw.elf@1"
	})
	if code != 422 || !strings.Contains(body, "ci/unknown/fw.elf") {
		t.Fatalf("unknown artifact: %d %s", code, body)
	}
}

// checked builds every published event as the K_SINK publisher does, so a
// payload its catalog type does not describe fails the test.
type checked struct{ t *testing.T }

func (c checked) Publish(_ context.Context, typ, subject string, data any) error {
	if _, err := events.New(events.Source("jobs"), typ, subject, data); err != nil {
		c.t.Errorf("publish %s: %v", typ, err)
	}
	return nil
}

func TestEmittedEventsMatchCatalog(t *testing.T) {
	f := setup(t)
	p := f.program(t, "")
	j, err := f.h.Create(context.Background(), model.JobSpec{ProgramID: p.ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"})
	if err != nil {
		t.Fatal(err)
	}
	f.h.emitStarted(j)
	j.State = model.JobTimedOut
	f.h.emitFinished(j)
	f.h.publish(events.TypeJobFinished, j)
}

func TestTenants(t *testing.T) {
	f := setup(t)
	acme, other := job.TenantContext(context.Background(), "acme", "t"), job.TenantContext(context.Background(), "other", "t")
	p := model.Program{ID: model.NewID(), Tenant: "acme", Name: "fw", Format: model.FormatELF, Size: 1, SHA256: strings.Repeat("0", 64), CreatedAt: time.Now().UTC()}
	f.st.PutProgram(context.Background(), p)
	spec := model.JobSpec{ProgramID: p.ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"}
	if _, err := f.h.Create(other, spec); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("another tenant's program: %v", err)
	}
	j, err := f.h.Create(acme, spec)
	if err != nil || j.Tenant != "acme" {
		t.Fatalf("create: %+v %v", j, err)
	}
	if _, err := f.h.Get(other, j.ID); err == nil {
		t.Fatal("another tenant got the job")
	}
	if _, err := f.h.Cancel(other, j.ID); err == nil {
		t.Fatal("another tenant cancelled the job")
	}
	if l, _ := f.h.List(other, "", 1, 20); l.Total != 0 {
		t.Fatalf("another tenant lists %+v", l)
	}
	if l, _ := f.h.List(acme, "", 1, 20); l.Total != 1 {
		t.Fatalf("the owner lists %+v", l)
	}
}

// A recorded job needs a board that can be recorded, and keep_recording
// only goes with record.
func TestCreateRecorded(t *testing.T) {
	f := setup(t)
	p := f.program(t, "")
	caps := board.Build("7.2.0", "q", []string{"mps2-an385", "arduino-uno"}, []string{"cortex-m3", "avr5"}, map[string]board.Probe{
		"mps2-an385":  {Clock: []string{board.FeatureDeterministic, board.FeatureRecord}},
		"arduino-uno": {Missing: map[string]string{board.FeatureRecord: "qemu-system-avr: Bad icount read"}},
	})
	if err := f.st.RegisterRunner(context.Background(), state.Runner{ID: "r1", URL: "http://127.0.0.1:1", Capacity: 1, Capabilities: caps}, time.Minute); err != nil {
		t.Fatal(err)
	}
	spec := func(b, extra string) string {
		return `{"program_id":"` + p.ID + `","board_config":{"board":"` + b + `"},"expect_exit_code":0` + extra + `}`
	}
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{spec("arduino-uno", `,"record":true`), 422, "record: board arduino-uno does not support record: qemu-system-avr: Bad icount read"},
		{spec("mps2-an385", `,"keep_recording":"always"`), 400, `keep_recording applies to recorded jobs only; add \"record\": true`},
		{spec("mps2-an385", `,"record":true,"keep_recording":"sometimes"`), 400, `keep_recording must be \"failed\"`},
		{spec("mps2-an385", `,"record":true,"deterministic":true`), 400, `deterministic and record do not combine`},
	} {
		if code, body := f.do(t, "POST", "/api/v1/jobs", tc.body, nil); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	var j model.Job
	if code, body := f.do(t, "POST", "/api/v1/jobs", spec("mps2-an385", `,"record":true`), &j); code != 201 || !j.Record || j.KeepRecording != model.KeepFailed {
		t.Errorf("recorded job: %d %s", code, body)
	}
}
