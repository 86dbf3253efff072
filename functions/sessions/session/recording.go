package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

// startRecording opens the recording a power on of a recording session
// makes (the runner stores it when the machine ends) and names it the
// session's latest.
func (svc *Service) startRecording(ctx context.Context, s *model.Session) (*model.Recording, error) {
	b, err := svc.board(ctx, *s)
	if err != nil {
		return nil, err
	}
	if !b.Has(board.FeatureRecord) {
		return nil, fail.Unprocessable("board %s cannot be recorded with this emulator (its capabilities lack %q)", b.Name, board.FeatureRecord)
	}
	rec := model.Recording{
		ID: model.NewID(), Tenant: s.Tenant, SessionID: s.ID, Backend: s.Backend, Machine: s.Machine,
		ProgramID: s.ProgramID, State: model.RecordingActive, ReverseDebug: b.Has(board.FeatureReverseDebug),
		CreatedAt: time.Now().UTC(),
	}
	if err := svc.d.State.PutRecording(ctx, rec); err != nil {
		return nil, err
	}
	updated, err := svc.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
		x.RecordingID = rec.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	*s = updated
	return &rec, nil
}

// board is the session's board as the runners offer it now.
func (svc *Service) board(ctx context.Context, s model.Session) (board.Board, error) {
	caps, err := svc.Capabilities(ctx)
	if err != nil {
		return board.Board{}, err
	}
	be, _ := caps.Backend(s.Backend)
	b, ok := be.Board(s.Machine)
	if !ok {
		return board.Board{}, fail.Unprocessable("board %s of session %s is no longer offered", s.Machine, s.ID)
	}
	return b, nil
}

// Recording returns one of the caller's recordings. One still being made
// whose machine is gone without storing it (its runner died, or its
// session went another way) is failed first, so it never stays
// "recording" for ever.
func (svc *Service) Recording(ctx context.Context, id string) (model.Recording, error) {
	rec, err := auth.Lookup(ctx, "recording", id, svc.d.State.GetRecording, func(r model.Recording) string { return r.Tenant })
	if err != nil || rec.State != model.RecordingActive {
		return rec, err
	}
	// Get fails the recording of a running session whose runner is dead
	// (checkRunner); a deleted session's runner stored or failed it
	// before the session went, so one still active was never finished.
	_, err = svc.Get(ctx, rec.SessionID)
	if errors.Is(err, fail.ErrNotFound) {
		_, err = svc.d.State.AbandonRecording(ctx, rec.ID, "not stored: its session "+rec.SessionID+" is gone")
	}
	if err != nil {
		svc.d.Log.Warn("check a recording's session", "recording", rec.ID, "err", err)
	}
	return svc.d.State.GetRecording(ctx, rec.ID)
}

// replayOf is the stored recording a replay session re-runs.
func (svc *Service) replayOf(ctx context.Context, s model.Session) (*model.Recording, error) {
	rec, err := svc.Recording(ctx, s.ReplayOf)
	if err != nil {
		return nil, fail.Unprocessable("recording %s that session %s replays is gone: %v", s.ReplayOf, s.ID, err)
	}
	if rec.State != model.RecordingReady {
		return nil, fail.Conflict("recording %s is %s; only a stored (ready) recording replays", rec.ID, rec.State)
	}
	return &rec, nil
}

// ReplayRequest is POST /api/v1/recordings/{id}/sessions.
type ReplayRequest struct {
	Name string `json:"name,omitempty"`
}

// CreateReplay creates a session that re-runs a stored recording: the same
// board and program, powered on with the recording instead of a fresh
// execution. It is created stopped; power it on (halted, to attach a
// debugger first) as any session.
func (svc *Service) CreateReplay(ctx context.Context, id string, in ReplayRequest) (model.Session, error) {
	rec, err := svc.Recording(ctx, id)
	if err != nil {
		return model.Session{}, err
	}
	if rec.State != model.RecordingReady {
		return model.Session{}, fail.Conflict("recording %s is %s; only a stored (ready) recording replays", rec.ID, rec.State)
	}
	name := in.Name
	if name == "" {
		name = "replay-" + rec.ID
	}
	s, err := svc.Create(ctx, CreateRequest{Name: name, Backend: rec.Backend, BoardConfig: model.BoardConfig{Board: rec.Machine}})
	if err != nil {
		return s, err
	}
	s, err = svc.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
		x.ReplayOf, x.ProgramID = rec.ID, rec.ProgramID
		return nil
	})
	if err != nil {
		svc.Delete(context.WithoutCancel(ctx), s.ID)
		return s, err
	}
	return s, nil
}

// Guard refuses what a replay session, or a recording one while it runs,
// cannot do (what says it), and is nil for every other session.
func Guard(s model.Session, what string) error {
	if s.ReplayOf != "" {
		return fail.Conflict("session %s replays recording %s: it cannot %s (the replay must follow the recorded execution)", s.ID, s.ReplayOf, what)
	}
	if s.Record && s.State == model.StateRunning {
		return fail.Conflict("session %s is being recorded: it cannot %s while it runs (power it off to store the recording)", s.ID, what)
	}
	return nil
}

// Recordings is GET /api/v1/recordings.
type Recordings struct {
	Recordings []model.Recording `json:"recordings"`
	Total      int               `json:"total"`
	Page       int               `json:"page"`
	PageSize   int               `json:"page_size"`
}

// ListRecordings returns a page of the caller's recordings, oldest first.
func (svc *Service) ListRecordings(ctx context.Context, page, size int) (Recordings, error) {
	all, _, err := svc.d.State.ListRecordings(ctx, 0, math.MaxInt32)
	if err != nil {
		return Recordings{}, err
	}
	own, total := auth.OwnPage(ctx, all, func(r model.Recording) string { return r.Tenant }, page, size)
	return Recordings{Recordings: own, Total: total, Page: page, PageSize: size}, nil
}

// DeleteRecording removes a stored (or failed) recording, its files and
// its share of the tenant's storage.
func (svc *Service) DeleteRecording(ctx context.Context, id string) (model.Recording, error) {
	rec, err := svc.Recording(ctx, id)
	if err != nil {
		return rec, err
	}
	if rec.State == model.RecordingActive {
		return rec, fail.Conflict("recording %s is still being made; power session %s off first", id, rec.SessionID)
	}
	if err := svc.d.State.DeleteRecording(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return rec, err
	}
	for _, f := range rec.Files {
		if err := svc.d.Blobs.Remove(ctx, model.RecordingFileKey(id, f.Name)); err != nil {
			return rec, fmt.Errorf("remove %s: %w", f.Name, err)
		}
	}
	if err := svc.d.Quota.Release(ctx, model.TenantOr(rec.Tenant), quota.Storage, quota.RecordingKey(id)); err != nil {
		svc.d.Log.Warn("release storage quota", "recording", id, "err", err)
	}
	return rec, nil
}

// RecordingConsole is what the console printed while the recording was
// made.
func (svc *Service) RecordingConsole(ctx context.Context, id string) ([]byte, error) {
	rec, err := svc.Recording(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.State != model.RecordingReady {
		return nil, fail.Conflict("recording %s is %s; its console is stored with it when the machine ends", id, rec.State)
	}
	return blob.GetBytes(ctx, svc.d.Blobs, model.RecordingFileKey(id, model.RecordingConsole))
}
