package handler

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/http/httptest"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/model"
)

// putBIN stores a raw image whose vector table holds sp and reset, as the
// programs function would, and returns its program id.
func putBIN(t *testing.T, h *Handler, sp, reset uint32) string {
	t.Helper()
	ctx := context.Background()
	img := make([]byte, 64)
	binary.LittleEndian.PutUint32(img[0:], sp)
	binary.LittleEndian.PutUint32(img[4:], reset)
	sum := sha256.Sum256(img)
	p := model.Program{ID: model.NewID(), Format: model.FormatBIN, Size: int64(len(img)), SHA256: hex.EncodeToString(sum[:]),
		Segments: []model.Segment{{Addr: 0, Size: uint64(len(img))}}}
	if err := blob.PutBytes(ctx, h.d.Blobs, model.ProgramImageKey(p.ID), img, "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	if err := h.d.State.PutProgram(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p.ID
}

// Loading warns of an image built for another board, keeps the warnings on
// the session, and a fitting image clears them.
func TestLoadWarnsOfAnotherBoardsImage(t *testing.T) {
	h, _, _ := setup(t)
	ctx := context.Background()
	s, _ := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	// mps2-an385's stack top, 4 MiB into RAM: netduino2 has 128 KiB.
	wrong := putBIN(t, h, 0x20400000, 0x08000009)
	good := putBIN(t, h, 0x20020000, 0x08000009)

	s, err := h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: wrong})
	if err != nil || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "initial stack pointer 0x20400000") {
		t.Fatalf("load of the wrong board's image: %v %q", err, s.Warnings)
	}
	if got, _ := h.Get(ctx, s.ID); len(got.Warnings) != 1 {
		t.Fatalf("warnings not kept on the session: %q", got.Warnings)
	}
	if s, err = h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: good}); err != nil || s.Warnings != nil {
		t.Fatalf("load of a fitting image: %v %q", err, s.Warnings)
	}
}

// A power on whose guest crashes QEMU answers with the session in error,
// and its CloudEvent reply is a failure; a reset moves updated_at.
func TestCrashAtStartAndReset(t *testing.T) {
	h, _, f := setup(t)
	ctx := context.Background()
	s, _ := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	if _, err := h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: putBIN(t, h, 0x20020000, 0x08000009)}); err != nil {
		t.Fatal(err)
	}
	s, err := h.PowerOn(ctx, s.ID, false)
	if err != nil || s.State != model.StateRunning {
		t.Fatalf("power on: %+v %v", s, err)
	}
	r, err := h.Reset(ctx, s.ID)
	if err != nil || !r.UpdatedAt.After(s.UpdatedAt) {
		t.Fatalf("reset: updated_at %v, before %v (%v)", r.UpdatedAt, s.UpdatedAt, err)
	}
	if _, err := h.PowerOff(ctx, s.ID); err != nil {
		t.Fatal(err)
	}

	f.crash = "emulator killed by signal aborted: qemu: fatal: Lockup"
	eh, err := h.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("/test")
	e.SetType(events.TypeSessionPowerOn)
	e.SetData(cloudevents.ApplicationJSON, events.SessionRef{SessionID: s.ID})
	srv := httptest.NewServer(eh)
	defer srv.Close()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	reply, res := c.Request(cloudevents.ContextWithTarget(ctx, srv.URL), e)
	if cloudevents.IsUndelivered(res) || reply == nil {
		t.Fatalf("reply %v, result %v", reply, res)
	}
	var got model.Session
	if reply.Type() != events.TypeSessionFailed || reply.DataAs(&got) != nil || got.Reason != f.crash {
		t.Fatalf("reply %s: %+v", reply.Type(), got)
	}
}
