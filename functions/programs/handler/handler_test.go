package handler

import (
	"bytes"
	"context"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

func firmware(t *testing.T) []byte {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../../../build/firmware"
	}
	b, err := os.ReadFile(filepath.Join(dir, "netduino2", "fw.elf"))
	if err != nil {
		t.Fatalf("test firmware missing (run make firmware): %v", err)
	}
	return b
}

func setup(t *testing.T, blobs blob.Store, max int64) (*Handler, *state.Store) {
	st, err := state.OpenEmbedded(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Deps{State: st, Blobs: blobs, Publisher: events.Nop, MaxUpload: max, Log: slog.New(slog.DiscardHandler)}), st
}

func TestStoreAndReindex(t *testing.T) {
	ctx := context.Background()
	blobs, _ := blob.NewFS(t.TempDir())
	h, _ := setup(t, blobs, 1<<20)
	p, err := h.Store(ctx, Upload{Name: "fw", Data: firmware(t)}) // format detected
	if err != nil || p.Format != model.FormatELF || p.Entry == nil || len(p.SHA256) != 64 {
		t.Fatalf("%+v %v", p, err)
	}
	// A fresh Redis: the index comes back from the manifests.
	h2, _ := setup(t, blobs, 1<<20)
	if n, err := h2.Reindex(ctx); err != nil || n != 1 {
		t.Fatalf("reindex: %d %v", n, err)
	}
	got, err := h2.Get(ctx, p.ID)
	if err != nil || got.SHA256 != p.SHA256 || !got.CreatedAt.Equal(p.CreatedAt) {
		t.Fatalf("%+v %v", got, err)
	}
	// An image without its manifest (a crash between the two writes) is not a program.
	blob.PutBytes(ctx, blobs, model.ProgramImageKey("00000000000000cc"), []byte{1}, "")
	if n, _ := h2.Reindex(ctx); n != 1 {
		t.Fatalf("orphan image indexed: %d", n)
	}
}

func TestStoreRefusals(t *testing.T) {
	ctx := context.Background()
	blobs, _ := blob.NewFS(t.TempDir())
	h, st := setup(t, blobs, 1024)
	for name, in := range map[string]Upload{
		"too large":   {Name: "x", Format: "bin", Data: make([]byte, 1025)},
		"no name":     {Format: "bin", Data: []byte{1}},
		"bad format":  {Name: "x", Format: "srec", Data: []byte{1}},
		"undetected":  {Name: "x", Data: []byte{1, 2, 3}},
		"garbage elf": {Name: "x", Format: "elf", Data: []byte("\x7fELF....")},
	} {
		_, err := h.Store(ctx, in)
		if e := httpapi.AsError(err); e == nil || e.Status >= 500 {
			t.Errorf("%s: want a 4xx, got %v", name, err)
		}
	}
	if objs, _ := blobs.List(ctx, ""); len(objs) != 0 {
		t.Fatalf("refused uploads left blobs: %v", objs)
	}
	// In use by a session: delete refused, nothing removed.
	p, err := h.Store(ctx, Upload{Name: "x", Format: "bin", Data: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	st.CreateSession(ctx, model.Session{ID: "00000000000000dd", ProgramID: p.ID, CreatedAt: time.Now()})
	if _, err := h.Delete(ctx, p.ID); err == nil {
		t.Fatal("deleted a program in use")
	}
	st.DeleteSession(ctx, "00000000000000dd")
	if _, err := h.Delete(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if objs, _ := blobs.List(ctx, ""); len(objs) != 0 {
		t.Fatalf("delete left blobs: %v", objs)
	}
}

func TestMultipartOverHTTP(t *testing.T) {
	blobs, _ := blob.NewFS(t.TempDir())
	h, _ := setup(t, blobs, 1<<20)
	mux := http.NewServeMux()
	httpapi.Mount(mux, h.Routes()...)
	post := func(fields map[string]string, file []byte) *httptest.ResponseRecorder {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		if file != nil {
			fw, _ := mw.CreateFormFile("file", "fw")
			fw.Write(file)
		}
		mw.Close()
		req := httptest.NewRequest("POST", "/api/v1/programs", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	if rec := post(map[string]string{"name": "b", "format": "bin", "load_address": "0x08000000"}, []byte{1, 2, 3, 4}); rec.Code != 201 {
		t.Fatalf("bin: %d %s", rec.Code, rec.Body)
	}
	if rec := post(map[string]string{"name": "b"}, nil); rec.Code != 400 {
		t.Fatalf("no file: %d %s", rec.Code, rec.Body)
	}
	if rec := post(map[string]string{"name": "b", "colour": "red"}, []byte{1}); rec.Code != 400 {
		t.Fatalf("unknown field: %d %s", rec.Code, rec.Body)
	}
	if rec := post(map[string]string{"name": "b", "format": "bin"}, make([]byte, 2<<20)); rec.Code != 413 {
		t.Fatalf("too large: %d %s", rec.Code, rec.Body)
	}
}
