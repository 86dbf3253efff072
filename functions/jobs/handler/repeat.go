package handler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/machineserver/machineserver/functions/jobs/job"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/model"
)

// repetition collects the runs of a repeated job (repeat above 1) and
// compares each with run 1 as it ends, so only run 1's console and counts
// stay in memory.
type repetition struct {
	h *Handler
	j model.Job

	first        job.Run
	firstVerdict verdict
	runs         []model.JobRun
	diff         *model.JobDifference
	// countsCompared: every run so far ended by itself with its counts.
	countsCompared bool
	total          time.Duration
	// stopped is the verdict of a run that ends the job early (error,
	// cancelled), with the run's number in its reason.
	stopped *verdict
}

// add records run n (from 1) and compares it with run 1; false means the
// job ends here: the run failed to run (error) or the job was cancelled.
func (r *repetition) add(ctx context.Context, n int, v verdict, console []byte) bool {
	sum := sha256.Sum256(console)
	jr := model.JobRun{Verdict: v.state, Reason: v.reason, ExitCode: v.exitCode, ConsoleBytes: len(console),
		ConsoleSHA256: hex.EncodeToString(sum[:]), Ended: v.ended, CoverageReportID: v.coverage,
		RecordingID: v.recording, DurationMS: float64(v.duration.Microseconds()) / 1000}
	switch {
	case console == nil:
		// The run never got to power on: nothing was printed or stored.
		jr.ConsoleSHA256 = ""
	case n == 1:
		// Stored as the job's own console when the job ends.
		jr.ConsoleKey = model.JobConsoleKey(r.j.ID)
	default:
		key := model.JobRunConsoleKey(r.j.ID, n)
		if err := blob.PutBytes(ctx, r.h.d.Blobs, key, console, "text/plain"); err != nil {
			r.h.d.Log.Error("store console of a run", "job", r.j.ID, "run", n, "err", err)
		} else {
			jr.ConsoleKey = key
		}
	}
	r.runs = append(r.runs, jr)
	r.total += v.duration
	if v.state == model.JobError || v.state == model.JobCancelled {
		stop := v
		stop.reason = fmt.Sprintf("run %d of %d: %s", n, r.j.Repeats(), v.reason)
		r.stopped = &stop
		if n == 1 {
			r.firstVerdict, r.first.Console = v, console
		}
		return false
	}
	run := job.Run{Verdict: v.state, ExitCode: v.exitCode, Console: console, Ended: v.ended}
	if v.coverage != "" {
		// The stored report's counts: what the comparison sees is what
		// the user downloads.
		if _, c, err := r.h.d.Sessions.StoredReport(ctx, v.coverage); err == nil {
			run.Counts = &c
		} else {
			r.h.d.Log.Warn("read the counts of a run", "job", r.j.ID, "run", n, "err", err)
		}
	}
	if n == 1 {
		r.first, r.firstVerdict = run, v
		r.countsCompared = job.CountsCompared([]job.Run{run})
		return true
	}
	r.countsCompared = r.countsCompared && job.CountsCompared([]job.Run{run})
	if r.diff == nil {
		r.diff = job.Compare(r.first, run, n)
	}
	return true
}

// outcome is the job's verdict from its runs: run 1's exit code, console
// and coverage report, every run's duration, and the state job.Outcome
// decides (or the verdict of the run that stopped the job).
func (r *repetition) outcome() (verdict, []byte) {
	v := r.firstVerdict
	if r.stopped != nil {
		v.state, v.reason = r.stopped.state, r.stopped.reason
	} else {
		v.state, v.reason = job.Outcome(r.runs, r.diff, r.countsCompared)
	}
	v.duration, v.runs, v.diff = r.total, r.runs, r.diff
	return v, r.first.Console
}
