package handler

import (
	"context"
	"errors"
	"time"

	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
)

// recordingSettle bounds the wait for a recording to leave "recording"
// after its session is deleted. The runner stores it before the delete
// answers, so this only covers a runner that answered without storing.
const recordingSettle = 30 * time.Second

// takeRecording ends a recorded run: deleting its session stores what the
// machine recorded (the runner does that before the delete returns). It
// returns the recording's id, or why the run has none.
func (h *Handler) takeRecording(ctx context.Context, sid string) (id, why string) {
	if sid == "" {
		return "", "the run's session was never created, so nothing was recorded"
	}
	s, err := h.d.State.GetSession(ctx, sid)
	h.dropSession(ctx, sid)
	if err != nil {
		return "", "the run's session is gone: " + err.Error()
	}
	if s.RecordingID == "" {
		return "", "the run never powered on, so nothing was recorded"
	}
	deadline := time.Now().Add(recordingSettle)
	for {
		rec, err := h.d.Sessions.Recording(ctx, s.RecordingID)
		switch {
		case err != nil:
			return "", "recording " + s.RecordingID + ": " + err.Error()
		case rec.State == model.RecordingFailed:
			return rec.ID, "recording " + rec.ID + " was not stored: " + rec.Reason
		case rec.State == model.RecordingReady:
			return rec.ID, ""
		case time.Now().After(deadline):
			return rec.ID, "recording " + rec.ID + " was still being stored when the job ended"
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// keepRecordings applies the job's keep_recording to what its runs
// recorded, once the job's verdict v is known: kept recordings name the
// job, the others are deleted (and their storage released). v.recording
// becomes the one the job links to: the first run that did not pass, else
// run 1's.
func (h *Handler) keepRecordings(ctx context.Context, j model.Job, v *verdict) {
	ids := []string{v.recording}
	if len(v.runs) > 0 {
		ids = ids[:0]
		for _, r := range v.runs {
			ids = append(ids, r.RecordingID)
		}
	}
	if !j.KeepRecording.Keeps(v.state) {
		h.deleteRecordings(ctx, j, ids)
		for i := range v.runs {
			v.runs[i].RecordingID = ""
		}
		v.recording, v.recordingErr = "", ""
		return
	}
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := h.d.State.UpdateRecording(ctx, id, func(x *model.Recording) error {
			x.JobID = j.ID
			return nil
		}); err != nil {
			h.d.Log.Warn("name the job in its recording", "job", j.ID, "recording", id, "err", err)
		}
	}
	v.recording = linked(ids, *v)
}

// linked picks the recording a job links to among its runs' (ids, in run
// order): the first run that did not pass, else the run that differed
// from run 1, else the first recorded.
func linked(ids []string, v verdict) string {
	for i, id := range ids {
		if id != "" && i < len(v.runs) && v.runs[i].Verdict != model.JobPassed {
			return id
		}
	}
	if v.diff != nil && v.diff.Run >= 1 && v.diff.Run <= len(ids) && ids[v.diff.Run-1] != "" {
		return ids[v.diff.Run-1]
	}
	for _, id := range ids {
		if id != "" {
			return id
		}
	}
	return ""
}

// abandon drops what a job's runs so far left when the job stops without a
// result (handed back, or taken over): the session sid, and a recorded
// job's recordings, since the run that gives the result records afresh.
func (h *Handler) abandon(ctx context.Context, j model.Job, sid string, runs []model.JobRun) {
	if !j.Record {
		if sid != "" {
			h.dropSession(ctx, sid)
		}
		return
	}
	var ids []string
	if sid != "" {
		id, _ := h.takeRecording(ctx, sid)
		ids = append(ids, id)
	}
	for _, r := range runs {
		ids = append(ids, r.RecordingID)
	}
	h.deleteRecordings(ctx, j, ids)
}

// deleteRecordings deletes the job's recordings ids ("" are skipped).
func (h *Handler) deleteRecordings(ctx context.Context, j model.Job, ids []string) {
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := h.d.Sessions.DeleteRecording(ctx, id); err != nil && !errors.Is(err, fail.ErrNotFound) {
			h.d.Log.Warn("delete a job's recording", "job", j.ID, "recording", id, "err", err)
		}
	}
}
