package handler

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

func setup(t *testing.T) (*Handler, *state.Store, blob.Store) {
	st, err := state.OpenEmbedded(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, _ := blob.NewFS(t.TempDir())
	log := slog.New(slog.DiscardHandler)
	sh := sessions.New(sessions.Deps{State: st, Publisher: events.Nop, RunnerToken: "t", Log: log})
	return New(Deps{State: st, Blobs: blobs, Sessions: sh, Publisher: events.Nop, Log: log}), st, blobs
}

func status(err error) int {
	var e *httpapi.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// A snapshot a restore is reading cannot be deleted; once the restore is
// done (or its lease ran out) it can, and its blobs and index go with it.
func TestDeleteWhileRestoring(t *testing.T) {
	h, st, blobs := setup(t)
	ctx := context.Background()
	snap := model.Snapshot{ID: model.NewID(), SessionID: model.NewID(), Name: "s", CreatedAt: time.Now()}
	st.PutSnapshot(ctx, snap)
	blob.PutBytes(ctx, blobs, model.SnapshotStateKey(snap.ID), []byte("state"), "")
	blob.PutBytes(ctx, blobs, model.SnapshotManifestKey(snap.ID), []byte("{}"), "")

	release, err := st.UseSnapshot(ctx, snap.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Delete(ctx, snap.ID); status(err) != 409 {
		t.Fatalf("delete during restore: %v", err)
	}
	if _, err := blobs.Stat(ctx, model.SnapshotStateKey(snap.ID)); err != nil {
		t.Fatalf("a refused delete removed the state: %v", err)
	}
	release()
	if _, err := h.Delete(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if objs, _ := blobs.List(ctx, "snapshots/"); len(objs) != 0 {
		t.Fatalf("left: %v", objs)
	}
	if _, err := h.Get(ctx, snap.ID); status(err) != 404 {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestReindexSkipsBrokenManifests(t *testing.T) {
	h, _, blobs := setup(t)
	ctx := context.Background()
	good := model.Snapshot{ID: model.NewID(), SessionID: model.NewID(), Name: "g", CreatedAt: time.Now()}
	b, _ := json.Marshal(good)
	blob.PutBytes(ctx, blobs, model.SnapshotManifestKey(good.ID), b, "")
	blob.PutBytes(ctx, blobs, model.SnapshotManifestKey("00000000000000ee"), []byte("{broken"), "")
	if n, err := h.Reindex(ctx); err != nil || n != 1 {
		t.Fatalf("reindex: %d %v", n, err)
	}
	l, err := h.List(ctx, "", httpapi.Page{Page: 1, Size: 10})
	if err != nil || l.Total != 1 || l.Snapshots[0].ID != good.ID {
		t.Fatalf("%+v %v", l, err)
	}
}

func TestForkValidation(t *testing.T) {
	h, _, _ := setup(t)
	ctx := context.Background()
	for _, n := range []int{0, -1, MaxFork + 1} {
		if _, err := h.Fork(ctx, model.NewID(), ForkRequest{Count: n}); status(err) != 400 {
			t.Errorf("count %d: %v", n, err)
		}
	}
}
