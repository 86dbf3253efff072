package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/jobs/job"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

const (
	// claimBlock is how long an idle worker waits on the stream before it
	// looks for lapsed leases again.
	claimBlock = time.Second
	// poll is how often a running job's console and session are read: the
	// console is read from an offset, so nothing is missed between polls.
	poll     = 5 * time.Millisecond
	slowPoll = 20 * time.Millisecond
	// maxConsole bounds the console log kept per job.
	maxConsole = 4 << 20
	// sessionWait bounds how long a job waits for a runner with free
	// capacity before it ends in error.
	sessionWait = time.Minute
	// deferPause keeps a worker from spinning on jobs that all wait for
	// their tenant's running-job slot.
	deferPause = 200 * time.Millisecond
)

// Start runs n workers until Stop (or ctx's end). Each worker takes one job
// at a time from the queue.
func (h *Handler) Start(ctx context.Context, n int) {
	ctx, cancel := context.WithCancel(ctx)
	h.mu.Lock()
	h.stop = cancel
	h.running = n
	h.mu.Unlock()
	host, _ := os.Hostname()
	for i := range n {
		consumer := fmt.Sprintf("%s-%d-%d", host, os.Getpid(), i)
		h.workers.Add(1)
		go func() {
			defer h.workers.Done()
			h.work(ctx, consumer)
		}()
	}
	queueStats := h.lastGoodQueueStats()
	metrics.JobsQueuedFrom(func() int { return int(queueStats().Depth) })
	metrics.JobsOldestAgeFrom(func() float64 { return float64(queueStats().OldestAgeMS) / 1000 })
	h.d.Log.Info("job workers started", "workers", n, "lease", h.d.Queue.Lease())
}

// lastGoodQueueStats reads the queue's stats for the metrics; when Redis
// fails it answers the last stats read, so a blip does not report an empty
// queue.
func (h *Handler) lastGoodQueueStats() func() queue.Stats {
	var mu sync.Mutex
	var last queue.Stats
	return func() queue.Stats {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := h.d.Queue.Stats(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			h.d.Log.Warn("queue stats for metrics; reporting the last ones", "err", err)
			return last
		}
		last = st
		return st
	}
}

// Stop stops the workers and waits for them. A job that was running goes
// back to queued (its session deleted) and runs again once its lease lapses.
func (h *Handler) Stop() {
	h.mu.Lock()
	stop := h.stop
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
	h.workers.Wait()
	h.mu.Lock()
	h.running = 0
	h.mu.Unlock()
}

func (h *Handler) work(ctx context.Context, consumer string) {
	for ctx.Err() == nil {
		m, err := h.d.Queue.Claim(ctx, consumer, claimBlock)
		if errors.Is(err, queue.ErrEmpty) {
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				h.d.Log.Warn("claim", "worker", consumer, "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		h.execute(ctx, consumer, m)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// execute runs one delivery of a job to its end and acks it; a worker
// stopping mid-job leaves it unacked for another worker, and so does a
// worker that lost its lease (another worker runs the job now) or could not
// record the result.
func (h *Handler) execute(ctx context.Context, consumer string, m queue.Message) {
	// Session and store calls must outlive a stopping worker: it still
	// cleans up after itself.
	bg := context.WithoutCancel(ctx)
	log := h.d.Log.With("job", m.JobID, "worker", consumer, "attempt", m.Attempt)
	ack := func() {
		if err := h.d.Queue.Ack(bg, m); err != nil {
			log.Error("ack", "err", err)
		}
	}
	// finish records the verdict and acks; a result that could not be
	// recorded stays unacked, so the job runs again once the lease lapses.
	finish := func(j model.Job, v verdict, console []byte) bool {
		if err := h.finish(bg, j, v, console); err != nil {
			log.Error("job result not recorded; left unacked to run again", "err", err)
			return false
		}
		ack()
		return true
	}
	j, err := h.d.State.GetJob(bg, m.JobID)
	// The job's session and program belong to its tenant.
	bg = job.TenantContext(bg, j.Tenant, "worker/"+consumer)
	if errors.Is(err, state.ErrNotFound) || (err == nil && j.State.Final()) {
		// Cancelled while queued, a stale duplicate, or a worker died
		// between recording the result and deleting the session.
		if j.SessionID != "" {
			h.dropSession(bg, j.SessionID)
		}
		ack()
		return
	}
	if err != nil {
		log.Error("load job", "err", err)
		return // the lease lapses and it is tried again
	}
	// A previous attempt's worker died mid-job: its emulator may still run.
	h.dropAttemptSessions(bg, j)
	switch {
	case m.Exhausted:
		finish(j, verdict{state: model.JobError, reason: fmt.Sprintf("gave up after %d attempts: every worker running it stopped before it ended", m.Attempt-1)}, nil)
		return
	case j.CancelRequested:
		finish(j, verdict{state: model.JobCancelled, reason: "cancelled while running"}, nil)
		return
	}

	tenant := auth.Tenant(bg)
	if err := h.d.Quota.Acquire(bg, tenant, quota.Jobs, j.ID, 1); err != nil {
		var qe *quota.ExceededError
		if !errors.As(err, &qe) {
			log.Error("job quota", "err", err)
			return // the lease lapses and it is tried again
		}
		// The tenant runs as many jobs as it may: back of the queue, so
		// other tenants' jobs are not held up behind it. It waits, so it
		// is queued, also when an earlier attempt had it running.
		if _, err := h.d.State.UpdateJob(bg, j.ID, func(x *model.Job) error {
			if x.State.Final() {
				return job.ErrFinal
			}
			x.State, x.Reason, x.SessionID = model.JobQueued, "waiting for a running-job slot: "+qe.Error(), ""
			return nil
		}); err != nil && !errors.Is(err, job.ErrFinal) {
			log.Warn("record deferral", "err", err)
		}
		if err := h.d.Queue.Defer(bg, m); err != nil {
			log.Error("defer job", "err", err)
		}
		sleep(ctx, deferPause)
		return
	}
	lctx, stopLease := context.WithCancelCause(ctx)
	defer stopLease(nil)
	lost := func() bool { return errors.Is(context.Cause(lctx), queue.ErrLeaseLost) }
	// Released however the job ends, also when it is handed back; a
	// crashed worker's holding is the same member, so the retry reuses it.
	// A lost lease's holding is the new worker's now.
	defer func() {
		if !lost() {
			h.d.Quota.Release(bg, tenant, quota.Jobs, j.ID)
		}
	}()
	go h.keepLease(lctx, stopLease, consumer, m)

	now := time.Now().UTC()
	j, err = h.d.State.UpdateJob(bg, j.ID, func(x *model.Job) error {
		if x.State.Final() {
			return job.ErrFinal // cancelled since it was read
		}
		x.State, x.Reason, x.Attempts, x.StartedAt, x.SessionID = model.JobRunning, "", m.Attempt, &now, ""
		x.Worker = consumer
		return nil
	})
	if errors.Is(err, job.ErrFinal) {
		ack()
		return
	}
	if err != nil {
		log.Error("mark running", "err", err)
		return
	}
	h.publish(events.TypeJobStarted, j)
	h.emitStarted(j)
	log.Info("job started")

	var (
		v       verdict
		console []byte
		sid     string
		runs    = repetition{h: h, j: j}
	)
	for n := 1; n <= j.Repeats(); n++ {
		if n > 1 {
			// A fresh session for every run; the last one goes after the
			// result is stored, as a single run's does.
			h.dropSession(bg, sid)
		}
		v, console, sid = h.run(lctx, bg, j)
		if !lost() && v.state != "" {
			// A lease can lapse between two renewals: make sure the job is
			// still ours before its result is.
			if err := h.d.Queue.Extend(bg, consumer, m); errors.Is(err, queue.ErrLeaseLost) {
				stopLease(err)
			}
		}
		if lost() {
			// Another worker reclaimed the job and runs it: stop ours
			// without a trace, the job is the other worker's now.
			h.abandon(bg, j, sid, runs.runs)
			log.Warn("lease lost: another worker runs the job; this run is dropped")
			return
		}
		if ctx.Err() != nil && v.state == "" {
			h.abandon(bg, j, sid, runs.runs)
			// Stopped mid-job: hand it back. It keeps its attempt count, and
			// the next worker reclaims it once the lease lapses.
			if _, err := h.d.State.UpdateJob(bg, j.ID, func(x *model.Job) error {
				x.State, x.Reason = model.JobQueued, "its worker stopped; it runs again"
				return nil
			}); err != nil {
				log.Warn("hand job back", "err", err)
			}
			log.Info("job handed back")
			return
		}
		if j.Coverage {
			// Before the session goes: its counts go with it.
			v.coverage, v.coverageErr = h.storeCoverage(bg, sid)
		}
		if j.Record {
			// The session goes first: its recording is stored when the
			// machine ends.
			v.recording, v.recordingErr = h.takeRecording(bg, sid)
			sid = ""
		}
		if j.Repeats() > 1 && !runs.add(bg, n, v, console) {
			break
		}
	}
	if j.Repeats() > 1 {
		v, console = runs.outcome()
	}
	if j.Record {
		h.keepRecordings(bg, j, &v)
	}
	// The stored job, for what changed while it ran (a cancel request).
	if cur, err := h.d.State.GetJob(bg, j.ID); err == nil {
		j = cur
	} else {
		log.Warn("reload job", "err", err)
	}
	finish(j, v, console)
	if sid != "" {
		h.dropSession(bg, sid)
	}
}

// keepLease extends the job's lease while it runs; when another worker has
// taken the job over, it cancels ctx with queue.ErrLeaseLost.
func (h *Handler) keepLease(ctx context.Context, lose context.CancelCauseFunc, consumer string, m queue.Message) {
	t := time.NewTicker(h.d.Queue.Lease() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := h.d.Queue.Extend(ctx, consumer, m)
			if errors.Is(err, queue.ErrLeaseLost) {
				lose(err)
				return
			}
			if err != nil && ctx.Err() == nil {
				h.d.Log.Warn("extend lease", "job", m.JobID, "err", err)
			}
		}
	}
}

// verdict is how a run ended.
type verdict struct {
	state    model.JobState
	reason   string
	exitCode *int
	duration time.Duration
	// loaded and poweredOn time the run's phases, for the debug log.
	loaded, poweredOn time.Time
	// coverage is the id of the run's stored coverage report;
	// coverageErr says why a job with coverage has none.
	coverage, coverageErr string
	// ended: the emulator ended by itself before the verdict.
	ended bool
	// recording is the id of what a recorded run recorded; recordingErr
	// says why a recorded run has none.
	recording, recordingErr string
	// runs and diff are a repeated job's (model.Job.Runs,
	// FirstDifference).
	runs []model.JobRun
	diff *model.JobDifference
}

// storeCoverage closes the coverage window of the job's session and stores
// its report, owned by the job's tenant (ctx's), exactly as a coverage stop
// through the API does. A failure is the job's coverage_error, not its
// verdict: the firmware's run was judged all the same.
func (h *Handler) storeCoverage(ctx context.Context, sid string) (id, why string) {
	if sid == "" {
		return "", "the job's session was never created, so nothing was counted"
	}
	rep, err := h.d.Sessions.CoverageStop(ctx, sid)
	if err != nil {
		h.d.Log.Warn("job coverage not stored", "session", sid, "err", err)
		return "", "coverage report not stored: " + err.Error()
	}
	return rep.ID, ""
}

// recordAttempts bounds the tries to record a job's result.
const recordAttempts = 3

// finish stores the console log and the manifest, records the final state
// and publishes it. An error means the result is not recorded (after a few
// tries): the caller must not ack, so the job runs again.
func (h *Handler) finish(ctx context.Context, j model.Job, v verdict, console []byte) error {
	arts := map[string]string{}
	consoleKey := ""
	if console != nil {
		consoleKey = model.JobConsoleKey(j.ID)
		if err := blob.PutBytes(ctx, h.d.Blobs, consoleKey, console, "text/plain"); err != nil {
			h.d.Log.Error("store console", "job", j.ID, "err", err)
			consoleKey = ""
		} else {
			arts["console"] = consoleKey
		}
	}
	arts["manifest"] = model.JobManifestKey(j.ID)
	// FinishedAt is when the result is stored: the manifest written with
	// it is the last artifact.
	now := time.Now().UTC()
	if j.Coverage && v.coverage == "" && v.coverageErr == "" {
		v.coverageErr = "no run of the job reached its end, so no coverage was stored"
	}
	apply := func(x *model.Job) {
		x.State, x.Reason, x.ExitCode, x.FinishedAt = v.state, v.reason, v.exitCode, &now
		x.DurationMS = float64(v.duration.Microseconds()) / 1000
		x.ConsoleKey, x.Artifacts = consoleKey, arts
		x.CoverageReportID, x.CoverageError = v.coverage, v.coverageErr
		x.Runs, x.FirstDifference = v.runs, v.diff
		x.RecordingID, x.RecordingError = v.recording, v.recordingErr
	}
	final := j
	apply(&final)
	final.UpdatedAt = now
	manifest, _ := json.MarshalIndent(final, "", "  ")
	if err := blob.PutBytes(ctx, h.d.Blobs, model.JobManifestKey(j.ID), manifest, "application/json"); err != nil {
		h.d.Log.Error("store manifest", "job", j.ID, "err", err)
	}
	var (
		done model.Job
		err  error
	)
	for attempt := range recordAttempts {
		if attempt > 0 {
			sleep(ctx, time.Duration(attempt)*100*time.Millisecond)
		}
		done, err = h.d.State.UpdateJob(ctx, j.ID, func(x *model.Job) error {
			apply(x)
			return nil
		})
		if err == nil || errors.Is(err, state.ErrNotFound) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("record result of job %s: %w", j.ID, err)
	}
	typ := events.TypeJobFinished
	if done.State == model.JobCancelled {
		typ = events.TypeJobCancelled
	}
	h.publish(typ, done)
	h.emitFinished(done)
	h.d.Log.Info("job ended", "job", done.ID, "state", done.State, "reason", done.Reason, "duration_ms", done.DurationMS)
	return nil
}

// dropAttemptSessions deletes what earlier attempts of j left: the session
// recorded on the job, and any session named after the job (a worker that
// died between creating its session and recording it left one that
// nothing else points to).
func (h *Handler) dropAttemptSessions(ctx context.Context, j model.Job) {
	if j.SessionID != "" {
		h.dropSession(ctx, j.SessionID)
	}
	if j.StartedAt == nil {
		return // never ran, so no session was ever made for it
	}
	ss, _, err := h.d.State.ListTenantSessions(ctx, model.TenantOr(j.Tenant), 0, 1<<20)
	if err != nil {
		h.d.Log.Warn("list sessions of earlier attempts", "job", j.ID, "err", err)
		return
	}
	for _, s := range ss {
		if s.Name == sessionName(j.ID) && s.ID != j.SessionID {
			h.dropSession(ctx, s.ID)
		}
	}
}

// sessionName names a job's sessions, so an unrecorded one is found.
func sessionName(jobID string) string { return "job-" + jobID }

func (h *Handler) dropSession(ctx context.Context, id string) {
	if _, err := h.d.Sessions.Delete(ctx, id); err != nil {
		if !errors.Is(err, fail.ErrNotFound) {
			h.d.Log.Warn("delete job session", "session", id, "err", err)
		}
	}
}

// newSession creates the job's session, waiting while every runner is full.
func (h *Handler) newSession(ctx, bg context.Context, j model.Job) (model.Session, error) {
	deadline := time.Now().Add(sessionWait)
	for {
		s, err := h.d.Sessions.Create(bg, session.CreateRequest{Name: sessionName(j.ID), BoardConfig: j.BoardConfig, Coverage: j.Coverage,
			Deterministic: j.Deterministic, Record: j.Record})
		if err == nil || !errors.Is(err, fail.ErrUnavailable) || time.Now().After(deadline) {
			return s, err
		}
		sleep(ctx, 100*time.Millisecond)
		if ctx.Err() != nil {
			return s, ctx.Err()
		}
	}
}

// run drives the job's session: create, load, power on, then follow the
// console and the session until the job's verdict. The caller deletes the
// session (sid) after recording the verdict: deleting it stops QEMU, which
// the result need not wait for. An empty verdict means the worker is
// stopping.
func (h *Handler) run(ctx, bg context.Context, j model.Job) (v verdict, console []byte, sid string) {
	fail := func(format string, args ...any) (verdict, []byte, string) {
		return verdict{state: model.JobError, reason: fmt.Sprintf(format, args...)}, nil, sid
	}
	t0 := time.Now()
	s, err := h.newSession(ctx, bg, j)
	if err != nil {
		if ctx.Err() != nil {
			return verdict{}, nil, ""
		}
		return fail("create session: %v", err)
	}
	sid = s.ID
	var tLoad time.Time
	defer func() {
		h.d.Log.Debug("job timing", "job", j.ID, "create_ms", ms(tLoad.Sub(t0)), "load_ms", ms(v.loaded.Sub(tLoad)),
			"poweron_ms", ms(v.poweredOn.Sub(v.loaded)), "run_ms", ms(time.Since(v.poweredOn)))
	}()
	if _, err := h.d.State.UpdateJob(bg, j.ID, func(x *model.Job) error { x.SessionID = s.ID; return nil }); err != nil {
		return fail("record session: %v", err)
	}
	tLoad = time.Now()
	if _, err := h.d.Sessions.LoadProgram(bg, s.ID, session.LoadRequest{ProgramID: j.ProgramID}); err != nil {
		return fail("load program %s: %v", j.ProgramID, err)
	}
	j2 := j
	j2.SessionID = s.ID
	v, console = h.follow(ctx, bg, j2, s)
	return v, console, sid
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// follow powers the session on and judges its console and exit.
func (h *Handler) follow(ctx, bg context.Context, j model.Job, s model.Session) (verdict, []byte) {
	timeout, _ := time.ParseDuration(j.Timeout)
	var pass, failRe *regexp.Regexp
	if j.PassPattern != "" {
		pass = regexp.MustCompile(j.PassPattern) // validated at create
	}
	if j.FailPattern != "" {
		failRe = regexp.MustCompile(j.FailPattern)
	}
	steps := make([]*regexp.Regexp, len(j.UARTScript))
	for i, st := range j.UARTScript {
		if st.WaitFor != "" {
			steps[i] = regexp.MustCompile(st.WaitFor)
		}
	}

	loaded := time.Now()
	if _, err := h.d.Sessions.PowerOn(bg, s.ID, false); err != nil {
		return verdict{state: model.JobError, reason: fmt.Sprintf("power on: %v", err)}, nil
	}
	start := time.Now()
	deadline := start.Add(timeout)
	rc, err := h.d.Sessions.Runner(bg, &s, false)
	if err == nil && rc == nil {
		err = errors.New("the session's runner is gone")
	}
	if err != nil {
		return verdict{state: model.JobError, reason: fmt.Sprintf("runner: %v", err)}, nil
	}

	console := []byte{} // stored even if the firmware printed nothing
	var off int64
	step, cursor := 0, 0 // script position; cursor is where wait_for searches from
	var stepDeadline time.Time
	passed, ended := false, false
	lastCancelCheck := start
	done := func(st model.JobState, format string, args ...any) verdict {
		return verdict{state: st, reason: fmt.Sprintf(format, args...), duration: time.Since(start), loaded: loaded, poweredOn: start, ended: ended}
	}
	// read appends new console output; fresh says whether there was any,
	// so the patterns are matched again only when the output grew.
	fresh := true
	read := func() error {
		data, _, next, err := rc.Console(bg, s.ID, "", off, 0)
		if err != nil {
			return err
		}
		fresh = fresh || len(data) > 0
		off = next
		if room := maxConsole - len(console); room > 0 {
			console = append(console, data[:min(len(data), room)]...)
		}
		return nil
	}
	for {
		// The session's state first, then the console: output printed
		// before an exit is read before the exit is judged.
		sess, err := h.d.State.GetSession(bg, s.ID)
		if err != nil {
			return done(model.JobError, "read session: %v", err), console
		}
		if err := read(); err != nil {
			return done(model.JobError, "read console: %v", err), console
		}
		ended = sess.State != model.StateRunning
		if failRe != nil && fresh {
			if loc := failRe.FindIndex(console); loc != nil {
				return done(model.JobFailed, "console matched fail_pattern %q: %q", j.FailPattern, console[loc[0]:loc[1]]), console
			}
		}
		for step < len(j.UARTScript) {
			st := j.UARTScript[step]
			if st.Send != "" {
				if sess.State != model.StateRunning {
					break
				}
				if err := rc.Input(bg, s.ID, "", []byte(st.Send)); err != nil {
					return done(model.JobError, "uart_script[%d] send: %v", step, err), console
				}
				step, cursor, stepDeadline = step+1, len(console), time.Time{}
				continue
			}
			if loc := steps[step].FindIndex(console[cursor:]); loc != nil {
				step, cursor, stepDeadline = step+1, cursor+loc[1], time.Time{}
				continue
			}
			if stepDeadline.IsZero() && st.Timeout != "" {
				d, _ := time.ParseDuration(st.Timeout)
				stepDeadline = time.Now().Add(d)
			}
			break
		}
		scriptDone := step == len(j.UARTScript)
		passed = passed || (pass != nil && fresh && pass.Match(console))
		fresh = false
		var code *int
		if sess.State != model.StateRunning && sess.Exit != nil && sess.Exit.Kind == "status" {
			code = &sess.Exit.Code
		}
		if code != nil && j.ExpectExitCode != nil && *code != *j.ExpectExitCode {
			v := done(model.JobFailed, "firmware exited with status %d, expected %d", *code, *j.ExpectExitCode)
			v.exitCode = code
			return v, console
		}
		if scriptDone && (pass == nil || passed) && (j.ExpectExitCode == nil || code != nil) {
			var why []string
			if pass != nil {
				why = append(why, fmt.Sprintf("console matched pass_pattern %q", j.PassPattern))
			}
			if code != nil && j.ExpectExitCode != nil {
				why = append(why, fmt.Sprintf("firmware exited with status %d as expected", *code))
			}
			if len(j.UARTScript) > 0 {
				why = append(why, fmt.Sprintf("uart_script completed (%d steps)", len(j.UARTScript)))
			}
			v := done(model.JobPassed, "%s", join(why))
			v.exitCode = code
			return v, console
		}
		if sess.State != model.StateRunning {
			v := done(model.JobFailed, "the emulator ended before the job passed (%s): %s", sess.State, pending(j, step, passed))
			if sess.Reason != "" {
				v.reason = fmt.Sprintf("the emulator ended before the job passed (%s): %s; waiting for %s", sess.State, sess.Reason, pending(j, step, passed))
			}
			v.exitCode = code
			return v, console
		}
		now := time.Now()
		if now.After(deadline) {
			return done(model.JobTimedOut, "timeout %s passed waiting for %s", j.Timeout, pending(j, step, passed)), console
		}
		if !stepDeadline.IsZero() && now.After(stepDeadline) {
			return done(model.JobTimedOut, "uart_script[%d] wait_for %q: its timeout %s passed", step, j.UARTScript[step].WaitFor, j.UARTScript[step].Timeout), console
		}
		if now.Sub(lastCancelCheck) > 50*time.Millisecond {
			lastCancelCheck = now
			if cur, err := h.d.State.GetJob(bg, j.ID); err == nil && cur.CancelRequested {
				return done(model.JobCancelled, "cancelled while running"), console
			}
		}
		interval := poll
		if now.Sub(start) > 2*time.Second {
			interval = slowPoll
		}
		sleep(ctx, interval)
		if ctx.Err() != nil {
			return verdict{}, console
		}
	}
}

// pending says what a job still waited for, for timeout and failure reasons.
func pending(j model.Job, step int, passed bool) string {
	switch {
	case step < len(j.UARTScript):
		st := j.UARTScript[step]
		return fmt.Sprintf("uart_script[%d] wait_for %q", step, st.WaitFor)
	case j.PassPattern != "" && !passed:
		return fmt.Sprintf("pass_pattern %q", j.PassPattern)
	case j.ExpectExitCode != nil:
		return fmt.Sprintf("the firmware to exit with status %d", *j.ExpectExitCode)
	}
	return "the end"
}

func join(parts []string) string {
	var b bytes.Buffer
	for i, p := range parts {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p)
	}
	return b.String()
}
