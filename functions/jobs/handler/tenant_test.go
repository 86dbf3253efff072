package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/machineserver/machineserver/shared/testenv"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/jobs/job"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

func (f *fixture) programOf(t *testing.T, tenant, sourceKey string) model.Program {
	t.Helper()
	p := model.Program{ID: model.NewID(), Tenant: tenant, Name: "fw", Format: model.FormatELF, Size: 1, SHA256: strings.Repeat("0", 64),
		SourceKey: sourceKey, State: model.ProgramStored, CreatedAt: time.Now().UTC()}
	if err := f.st.PutProgram(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// postAs sends a binary-mode event whose tenant attribute is tenant, as the
// in-cluster Broker delivers it.
func (f *fixture) postAs(t *testing.T, tenant, typ, id string, data any) (int, string, string) {
	t.Helper()
	b, _ := json.Marshal(data)
	req, _ := http.NewRequest("POST", f.srv.URL+"/events", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-source", "/test/ci")
	req.Header.Set("ce-type", typ)
	req.Header.Set("ce-tenant", tenant)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header.Get("Ce-Type"), buf.String()
}

// postSampleAs posts an event sample from events/ with a tenant attribute.
func (f *fixture) postSampleAs(t *testing.T, tenant, typ string) (int, string) {
	t.Helper()
	b, err := events.Sample(typ)
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	json.Unmarshal(b, &e)
	e[events.TenantExtension] = tenant
	b, _ = json.Marshal(e)
	resp, err := http.Post(f.srv.URL+"/events", "application/cloudevents+json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

func (f *fixture) jobsOf(t *testing.T, tenant string) []model.Job {
	t.Helper()
	js, _, err := f.st.ListJobs(context.Background(), func(j model.Job) bool { return model.TenantOr(j.Tenant) == tenant }, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (f *fixture) rule(t *testing.T, tenant, prefix string) model.JobRule {
	t.Helper()
	r, err := f.h.CreateRule(job.TenantContext(context.Background(), tenant, "t"), RuleRequest{Prefix: prefix,
		Template: model.JobSpec{BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "ready"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A CDEvent artifact.published naming another tenant's program key is
// answered as an unknown key: no job, no ids in the reply.
func TestArtifactOfAnotherTenant(t *testing.T) {
	f := setup(t)
	p := f.programOf(t, "acme", "ci/netduino2/fw.elf") // the sample's key
	f.rule(t, "acme", "ci/netduino2/")
	code, body := f.postSampleAs(t, "other", events.TypeCDArtifactPublished)
	if code != 422 || strings.Contains(body, p.ID) || !strings.Contains(body, "no program was registered from bucket key") {
		t.Fatalf("artifact of another tenant's key: %d %s", code, body)
	}
	if js := f.jobsOf(t, "acme"); len(js) != 0 {
		t.Fatalf("another tenant's artifact event queued %+v", js)
	}
	code, body = f.postSampleAs(t, "acme", events.TypeCDArtifactPublished)
	if code != 200 || !strings.Contains(body, p.ID) || len(f.jobsOf(t, "acme")) != 1 {
		t.Fatalf("the owner's artifact event: %d %s", code, body)
	}
}

// program.stored is judged by the stored program, not by what the event
// says: another tenant's program is unknown, and the stored source key picks
// the rules.
func TestProgramStoredUsesStoredProgram(t *testing.T) {
	f := setup(t)
	p := f.programOf(t, "acme", "ci/a.elf")
	f.rule(t, "acme", "ci/")
	f.rule(t, "other", "ci/")
	forged := p
	forged.Tenant = "other"
	code, _, body := f.postAs(t, "other", events.TypeProgramStored, "n-1", forged)
	if code != 422 || strings.Contains(body, `"jobs"`) {
		t.Fatalf("program.stored for another tenant's program: %d %s", code, body)
	}
	if js := append(f.jobsOf(t, "acme"), f.jobsOf(t, "other")...); len(js) != 0 {
		t.Fatalf("another tenant's program.stored queued %+v", js)
	}
	elsewhere := p
	elsewhere.SourceKey = "elsewhere/a.elf" // the event lies about the key
	var out events.JobsTriggered
	code, typ, body := f.postAs(t, "acme", events.TypeProgramStored, "n-2", elsewhere)
	json.Unmarshal([]byte(body), &out)
	if code != 200 || typ != events.TypeJobTriggered || out.SourceKey != "ci/a.elf" || len(out.Jobs) != 1 {
		t.Fatalf("the owner's program.stored: %d %s", code, body)
	}
	if js := f.jobsOf(t, "acme"); len(js) != 1 || js[0].ProgramID != p.ID || len(f.jobsOf(t, "other")) != 0 {
		t.Fatalf("jobs after the owner's program.stored: %+v", js)
	}
}

// The same event (source and id) from two tenants is two jobs, and neither
// learns of the other's.
func TestEventJobIDsPerTenant(t *testing.T) {
	f := setup(t)
	spec := func(p model.Program) model.JobSpec {
		return model.JobSpec{ProgramID: p.ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "ready"}
	}
	var a, b model.Job
	code, _, body := f.postAs(t, "acme", events.TypeJobCreate, "run-1", spec(f.programOf(t, "acme", "")))
	json.Unmarshal([]byte(body), &a)
	if code != 200 || a.Tenant != "acme" {
		t.Fatalf("acme's event: %d %s", code, body)
	}
	code, _, body = f.postAs(t, "other", events.TypeJobCreate, "run-1", spec(f.programOf(t, "other", "")))
	json.Unmarshal([]byte(body), &b)
	if code != 200 || b.Tenant != "other" || b.ID == a.ID || strings.Contains(body, a.ID) {
		t.Fatalf("the same event from another tenant: %d %s (acme's job %s)", code, body, a.ID)
	}
	// The CDEvents form too.
	f.programOf(t, "acme", "ci/netduino2/fw.elf")
	f.programOf(t, "other", "ci/netduino2/fw.elf")
	code, ab := f.postSampleAs(t, "acme", events.TypeCDTestSuiteRunQueued)
	code2, ob := f.postSampleAs(t, "other", events.TypeCDTestSuiteRunQueued)
	var ja, jb model.Job
	json.Unmarshal([]byte(ab), &ja)
	json.Unmarshal([]byte(ob), &jb)
	if code != 200 || code2 != 200 || ja.ID == jb.ID || ja.Tenant != "acme" || jb.Tenant != "other" {
		t.Fatalf("testsuiterun.queued from two tenants: %d %s / %d %s", code, ab, code2, ob)
	}
}

// program_key resolves among the caller's tenant's stored programs only,
// even when another tenant registered the same key later.
func TestProgramKeyOfCallerTenant(t *testing.T) {
	f := setup(t)
	mine := f.programOf(t, "acme", "fw/app.elf")
	f.programOf(t, "other", "fw/app.elf")
	rejected := f.programOf(t, "acme", "fw/bad.elf")
	f.st.PutProgram(context.Background(), func() model.Program { rejected.State = model.ProgramRejected; return rejected }())
	acme := job.TenantContext(context.Background(), "acme", "t")
	j, err := f.h.Create(acme, model.JobSpec{ProgramKey: "fw/app.elf", BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"})
	if err != nil || j.ProgramID != mine.ID {
		t.Fatalf("program_key with another tenant's newer program of that key: %+v %v; want %s", j, err, mine.ID)
	}
	if _, err := f.h.Create(acme, model.JobSpec{ProgramKey: "fw/bad.elf", BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"}); err == nil {
		t.Fatal("program_key of a rejected program made a job")
	}
	if _, err := f.h.Create(job.TenantContext(context.Background(), "third", "t"), model.JobSpec{ProgramKey: "fw/app.elf", BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"}); err == nil {
		t.Fatal("a tenant without a program of that key made a job")
	}
}

// Stats: a tenant sees its own jobs per state and no queue; an admin sees
// the queue.
func TestStatsPerTenant(t *testing.T) {
	f := setup(t)
	for _, tenant := range []string{"acme", "other", "other"} {
		ctx := job.TenantContext(context.Background(), tenant, "t")
		if _, err := f.h.Create(ctx, model.JobSpec{ProgramID: f.programOf(t, tenant, "").ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.h.Stats(job.TenantContext(context.Background(), "acme", "t"))
	if err != nil || st.Queue != nil || st.States[model.JobQueued] != 1 {
		t.Fatalf("a tenant's stats: %+v %v", st, err)
	}
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), `"queue":`) || strings.Contains(string(b), "consumers") {
		t.Fatalf("a tenant's stats show the queue: %s", b)
	}
	admin := auth.WithPrincipal(context.Background(), auth.Principal{Actor: "key:a", Tenant: "acme", Scopes: []auth.Scope{auth.ScopeAdmin}})
	st, err = f.h.Stats(admin)
	if err != nil || st.Queue == nil || st.Queue.Depth != 3 || st.States[model.JobQueued] != 1 {
		t.Fatalf("an admin's stats: %+v %v", st, err)
	}
}

// The metrics' queue stats keep their last value when Redis fails, rather
// than reporting an empty queue.
func TestQueueGaugeKeepsLastValue(t *testing.T) {
	f := setup(t)
	for range 2 {
		if _, err := f.h.Create(context.Background(), model.JobSpec{ProgramID: f.programOf(t, "", "").ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	read := f.h.lastGoodQueueStats()
	if st := read(); st.Depth != 2 || st.OldestAgeMS < 0 {
		t.Fatalf("queue stats: %+v", st)
	}
	ctx := context.Background()
	testenv.RawRedis(t, f.st.Addr()).Rename(ctx, "ms:jobqueue", "ms:jobqueue-aside")
	testenv.RawRedis(t, f.st.Addr()).Set(ctx, "ms:jobqueue", "not a stream", 0)
	if _, err := f.q.Stats(ctx); err == nil {
		t.Fatal("the broken queue still answers")
	}
	if st := read(); st.Depth != 2 {
		t.Fatalf("queue stats while Redis fails: %+v, want the last ones", st)
	}
}

// A job that cannot be queued is not left queued forever: the request fails
// with a 5xx and no job remains.
func TestEnqueueFailureLeavesNoJob(t *testing.T) {
	f := setup(t)
	p := f.programOf(t, "", "")
	ctx := context.Background()
	testenv.RawRedis(t, f.st.Addr()).Del(ctx, "ms:jobqueue")
	testenv.RawRedis(t, f.st.Addr()).Set(ctx, "ms:jobqueue", "not a stream", 0)
	code, body := f.do(t, "POST", "/api/v1/jobs", `{"program_id":"`+p.ID+`","board_config":{"board":"netduino2"},"pass_pattern":"x"}`, nil)
	if code < 500 || !strings.Contains(body, `"error"`) {
		t.Fatalf("create with a broken queue: %d %s", code, body)
	}
	if _, total, _ := f.st.ListJobs(ctx, nil, 0, 10); total != 0 {
		t.Fatalf("%d jobs left behind by a failed enqueue", total)
	}
}

// claim takes the next message of the fixture's queue as consumer.
func (f *fixture) claim(t *testing.T, consumer string) queue.Message {
	t.Helper()
	for range 100 {
		m, err := f.q.Claim(context.Background(), consumer, 50*time.Millisecond)
		if errors.Is(err, queue.ErrEmpty) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Fatal("no message")
	return queue.Message{}
}

// crashedJob is a queued job of tenant acme whose earlier attempt ran on a
// worker that died: the record still says running.
func (f *fixture) crashedJob(t *testing.T, edit func(*model.Job)) model.Job {
	t.Helper()
	acme := job.TenantContext(context.Background(), "acme", "t")
	j, err := f.h.Create(acme, model.JobSpec{ProgramID: f.programOf(t, "acme", "").ID, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "x"})
	if err != nil {
		t.Fatal(err)
	}
	j, err = f.st.UpdateJob(context.Background(), j.ID, func(x *model.Job) error {
		now := time.Now().UTC()
		x.State, x.StartedAt, x.Attempts, x.Worker = model.JobRunning, &now, 1, "dead-worker"
		if edit != nil {
			edit(x)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// A job waiting for its tenant's running-job slot is queued, also when an
// earlier attempt had it running.
func TestDeferredJobIsQueued(t *testing.T) {
	f := setup(t)
	f.h.d.Quota = f.st.Quota(quota.Config{Sessions: 20, StorageBytes: 1 << 30, Jobs: 1})
	ctx := context.Background()
	if err := f.h.d.Quota.Acquire(ctx, "acme", quota.Jobs, "another-job", 1); err != nil {
		t.Fatal(err)
	}
	j := f.crashedJob(t, nil)
	f.h.execute(ctx, "w", f.claim(t, "w"))
	got, _ := f.st.GetJob(ctx, j.ID)
	if got.State != model.JobQueued || !strings.Contains(got.Reason, "waiting for a running-job slot") {
		t.Fatalf("a deferred job: %s %q", got.State, got.Reason)
	}
	if st, _ := f.q.Stats(ctx); st.Depth != 1 || st.Pending != 0 {
		t.Fatalf("queue after deferring: %+v", st)
	}
}

// A worker that died after creating its session but before recording it on
// the job left a session nothing points to: the next attempt deletes it by
// its name, and only it.
func TestReclaimDropsUnrecordedSession(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	j := f.crashedJob(t, func(x *model.Job) { x.CancelRequested = true })
	orphan := model.Session{ID: model.NewID(), Tenant: "acme", Name: sessionName(j.ID), State: model.StateCreated, CreatedAt: time.Now().UTC()}
	keep := model.Session{ID: model.NewID(), Tenant: "acme", Name: "mine", State: model.StateCreated, CreatedAt: time.Now().UTC()}
	for _, s := range []model.Session{orphan, keep} {
		if err := f.st.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	f.h.execute(ctx, "w", f.claim(t, "w"))
	if _, err := f.st.GetSession(ctx, orphan.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the dead attempt's unrecorded session: %v, want it deleted", err)
	}
	if _, err := f.st.GetSession(ctx, keep.ID); err != nil {
		t.Fatalf("another session of the tenant: %v", err)
	}
	if got, _ := f.st.GetJob(ctx, j.ID); got.State != model.JobCancelled {
		t.Fatalf("job: %+v", got)
	}
	if st, _ := f.q.Stats(ctx); st.Depth != 0 || st.Pending != 0 {
		t.Fatalf("queue: %+v", st)
	}
}

// A result that cannot be recorded is not acked: the job stays claimed, so
// it runs again once the lease lapses, instead of being lost.
func TestUnrecordedResultIsNotAcked(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	j := f.crashedJob(t, func(x *model.Job) { x.CancelRequested = true })
	// A Redis user that may read everything but not SET: the job can be
	// loaded and the queue worked, but no result written.
	rdb := testenv.RawRedis(t, f.st.Addr())
	if err := rdb.Do(ctx, "ACL", "SETUSER", "nowrite", "on", ">pw", "~*", "&*", "+@all", "-set").Err(); err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "redis", Host: rdb.Options().Addr, Path: "/0", User: url.UserPassword("nowrite", "pw")}
	st2, err := state.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() })
	q2, err := st2.Queue(ctx, QueueConfig(time.Minute, 3))
	if err != nil {
		t.Fatal(err)
	}
	h2 := New(Deps{State: st2, Blobs: f.h.d.Blobs, Sessions: f.h.d.Sessions, Queue: q2, Publisher: checked{t}, Log: f.h.d.Log})
	m, err := q2.Claim(ctx, "w", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h2.execute(ctx, "w", m)
	if got, _ := f.st.GetJob(ctx, j.ID); got.State != model.JobRunning {
		t.Fatalf("job: %+v", got)
	}
	if qs, _ := f.q.Stats(ctx); qs.Pending != 1 || qs.Consumers["w"] != 1 {
		t.Fatalf("queue after a result that was not recorded: %+v, want the job still claimed", qs)
	}
}

// A worker whose lease lapsed and was reclaimed by another stops: its lease
// keeper cancels the run with ErrLeaseLost instead of taking the job back.
func TestLeaseLostStopsTheRun(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	q, err := f.st.Queue(ctx, queue.Config{Stream: "test:lease", Group: "g", Lease: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.h.d.Queue = q
	if _, err := q.Enqueue(ctx, "job-1"); err != nil {
		t.Fatal(err)
	}
	slow, err := q.Claim(ctx, "slow", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := q.Claim(ctx, "live", 10*time.Millisecond); err == nil {
			break // the lease lapsed and the live worker took the job
		}
	}
	lctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	go f.h.keepLease(lctx, lose, "slow", slow)
	select {
	case <-lctx.Done():
	case <-time.After(30 * time.Second): // a safety net, not a measurement
		t.Fatal("the slow worker kept running a job another worker reclaimed")
	}
	if cause := context.Cause(lctx); !errors.Is(cause, queue.ErrLeaseLost) {
		t.Fatalf("the slow worker's run ended with %v, want ErrLeaseLost", cause)
	}
	if st, _ := q.Stats(ctx); st.Consumers["live"] != 1 || st.Consumers["slow"] != 0 {
		t.Fatalf("owners: %+v", st.Consumers)
	}
}

// Published job events carry the job's tenant as the tenant attribute, so
// a function receiving them through the Broker acts for that tenant.
func TestPublishedEventsCarryTenant(t *testing.T) {
	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Ce-Tenant")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	f := setup(t)
	sink, err := events.NewSink(srv.URL, events.Source("jobs"), f.h.d.Log)
	if err != nil {
		t.Fatal(err)
	}
	d := f.h.d
	d.Publisher = sink
	h := New(d)
	h.publish(events.TypeJobQueued, model.Job{ID: model.NewID(), Tenant: "acme", State: model.JobQueued})
	h.publish(events.TypeJobQueued, model.Job{ID: model.NewID(), State: model.JobQueued})
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := <-got, <-got; a != "acme" || b != auth.DefaultTenant {
		t.Fatalf("tenant attributes %q and %q, want acme and default", a, b)
	}
}

// A job with coverage that ends without a report says why: no run of it
// ended (cancelled before its retry ran), or its counts went with its
// runner.
func TestCoverageErrorSaysWhy(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	j := f.crashedJob(t, func(x *model.Job) { x.CancelRequested, x.Coverage = true, true })
	f.h.execute(ctx, "w", f.claim(t, "w"))
	got, _ := f.st.GetJob(ctx, j.ID)
	if got.State != model.JobCancelled || got.CoverageReportID != "" || !strings.Contains(got.CoverageError, "no run of the job reached its end") {
		t.Fatalf("a job with coverage cancelled before it ran: %+v", got)
	}
	s := model.Session{ID: model.NewID(), Tenant: "acme", Name: sessionName(j.ID), State: model.StateStopped, RunnerID: "gone-runner",
		ProgramID: j.ProgramID, Coverage: true, CreatedAt: time.Now().UTC()}
	if err := f.st.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	id, why := f.h.storeCoverage(job.TenantContext(ctx, "acme", "t"), s.ID)
	if id != "" || !strings.Contains(why, "coverage report not stored") || !strings.Contains(why, "runner gone-runner") {
		t.Fatalf("coverage of a session whose runner is gone: %q %q", id, why)
	}
	if _, why := f.h.storeCoverage(ctx, ""); !strings.Contains(why, "never created") {
		t.Fatalf("coverage of no session: %q", why)
	}
}
