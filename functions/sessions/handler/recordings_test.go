package handler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

// recordingRunner registers r1 again with boards that can be recorded.
func recordingRunner(t *testing.T, st *state.Store) {
	t.Helper()
	ctx := context.Background()
	r1, err := st.Runner(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	r1.Capabilities = board.Build("7.2.0", "qemu-system-arm", []string{"mps2-an385", "lm3s6965evb"}, []string{"cortex-m3"}, map[string]board.Probe{
		"mps2-an385":  {Clock: []string{board.FeatureDeterministic, board.FeatureRecord, board.FeatureReverseDebug}},
		"lm3s6965evb": {Missing: map[string]string{board.FeatureRecord: "scripted: no"}},
	})
	if err := st.RegisterRunner(ctx, r1, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// recordingOn powers on a recording session and returns it with the
// recording its power on opened.
func recordingOn(t *testing.T, h *Handler, st *state.Store) (model.Session, model.Recording) {
	t.Helper()
	ctx := context.Background()
	s, err := h.Create(ctx, CreateRequest{Name: "rec", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	p := model.Program{ID: model.NewID(), Format: model.FormatELF, SHA256: strings.Repeat("b", 64), Segments: []model.Segment{{Addr: 0, Size: 64}}}
	st.PutProgram(ctx, p)
	if _, err := h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: p.ID}); err != nil {
		t.Fatal(err)
	}
	if s, err = h.PowerOn(ctx, s.ID, false); err != nil {
		t.Fatal(err)
	}
	rec, err := h.Recording(ctx, s.RecordingID)
	if err != nil || rec.State != model.RecordingActive || !rec.ReverseDebug {
		t.Fatalf("recording after power on: %+v %v", rec, err)
	}
	return s, rec
}

// A recording never stays "recording" once the machine making it is gone
// without storing it: its runner stopped heartbeating, or its session
// vanished.
func TestRecordingOfALostMachineFails(t *testing.T) {
	ctx := context.Background()
	t.Run("runner lost", func(t *testing.T) {
		h, st, _ := setup(t)
		recordingRunner(t, st)
		_, rec := recordingOn(t, h, st)
		if err := st.UnregisterRunner(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		got, err := h.Recording(ctx, rec.ID)
		if err != nil || got.State != model.RecordingFailed || !strings.Contains(got.Reason, "runner r1 stopped heartbeating") {
			t.Fatalf("recording of a lost runner: %+v %v", got, err)
		}
	})
	t.Run("session gone", func(t *testing.T) {
		h, st, _ := setup(t)
		recordingRunner(t, st)
		s, rec := recordingOn(t, h, st)
		if err := st.DeleteSession(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		got, err := h.Recording(ctx, rec.ID)
		if err != nil || got.State != model.RecordingFailed || !strings.Contains(got.Reason, "session "+s.ID+" is gone") {
			t.Fatalf("recording of a deleted session: %+v %v", got, err)
		}
	})
	t.Run("still recording", func(t *testing.T) {
		h, st, _ := setup(t)
		recordingRunner(t, st)
		_, rec := recordingOn(t, h, st)
		got, err := h.Recording(ctx, rec.ID)
		if err != nil || got.State != model.RecordingActive {
			t.Fatalf("recording of a live machine: %+v %v", got, err)
		}
		if _, err := h.DeleteRecording(ctx, rec.ID); status(err) != 409 {
			t.Fatalf("delete of a recording being made: %v", err)
		}
	})
}

// Recording needs a board that can be recorded; a replay follows its
// recording, so what would change the execution is a 409 that says why.
func TestRecordingRefusals(t *testing.T) {
	ctx := context.Background()
	h, st, _ := setup(t)
	recordingRunner(t, st)
	_, err := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "lm3s6965evb"}, Record: true})
	if status(err) != 422 || !strings.Contains(err.Error(), `lack "record"`) {
		t.Fatalf("record on a board without it: %v", err)
	}
	_, err = h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, Record: true, Deterministic: true})
	if status(err) != 400 || !strings.Contains(err.Error(), "deterministic and record do not combine") {
		t.Fatalf("deterministic and recorded: %v", err)
	}
	s, rec := recordingOn(t, h, st)
	if _, err := h.Reset(ctx, s.ID); status(err) != 409 || !strings.Contains(err.Error(), "being recorded") {
		t.Fatalf("reset of a recording session: %v", err)
	}
	if _, err := h.CreateReplay(ctx, rec.ID, session.ReplayRequest{}); status(err) != 409 || !strings.Contains(err.Error(), "only a stored (ready) recording replays") {
		t.Fatalf("replay of a recording being made: %v", err)
	}
}
