package handler

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
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
	sh := session.New(session.Deps{State: st, Publisher: events.Nop, RunnerToken: "t", Log: log})
	return New(Deps{State: st, Blobs: blobs, Sessions: sh, Publisher: events.Nop, Log: log}), st, blobs
}

func status(err error) int {
	if e := httpapi.AsError(err); e != nil {
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
	blob.PutBytes(ctx, blobs, model.SnapshotStateKey(good.ID), []byte("state"), "")
	// A save cut short between its two writes leaves a manifest alone.
	cut := model.Snapshot{ID: model.NewID(), SessionID: model.NewID(), Name: "c", CreatedAt: time.Now()}
	b, _ = json.Marshal(cut)
	blob.PutBytes(ctx, blobs, model.SnapshotManifestKey(cut.ID), b, "")
	blob.PutBytes(ctx, blobs, model.SnapshotManifestKey("00000000000000ee"), []byte("{broken"), "")
	if n, err := h.Reindex(ctx); err != nil || n != 1 {
		t.Fatalf("reindex: %d %v", n, err)
	}
	l, err := h.List(ctx, "", 1, 10)
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

// A tenant sees only its own snapshots and sessions: those of another tenant
// answer exactly like unknown ids, and nothing of them is touched.
func TestTenantIsolation(t *testing.T) {
	h, st, blobs := setup(t)
	ctxA := auth.WithPrincipal(context.Background(), auth.Principal{Actor: "key:a", Tenant: "a", Scopes: []auth.Scope{auth.ScopeAdmin}})
	ctxB := auth.WithPrincipal(context.Background(), auth.Principal{Actor: "key:b", Tenant: "b", Scopes: []auth.Scope{auth.ScopeAdmin}})
	sess := model.Session{ID: model.NewID(), Tenant: "a", Name: "s", Backend: "qemu", Machine: "mps2-an385", State: model.StateCreated, CreatedAt: time.Now()}
	if err := st.CreateSession(context.Background(), sess); err != nil {
		t.Fatal(err)
	}
	snap := model.Snapshot{ID: model.NewID(), Tenant: "a", SessionID: sess.ID, Name: "snap", Backend: "qemu", Machine: "mps2-an385", CreatedAt: time.Now()}
	st.PutSnapshot(context.Background(), snap)
	blob.PutBytes(context.Background(), blobs, model.SnapshotStateKey(snap.ID), []byte("state"), "")
	blob.PutBytes(context.Background(), blobs, model.SnapshotManifestKey(snap.ID), []byte("{}"), "")
	unknown := model.NewID()

	// The owner sees it.
	if got, err := h.Get(ctxA, snap.ID); err != nil || got.ID != snap.ID {
		t.Fatalf("owner get: %+v %v", got, err)
	}
	for _, sid := range []string{"", sess.ID} {
		if l, err := h.List(ctxA, sid, 1, 10); err != nil || l.Total != 1 || len(l.Snapshots) != 1 {
			t.Fatalf("owner list %q: %+v %v", sid, l, err)
		}
	}

	// The other tenant gets the answers an unknown id gets.
	same := func(what string, got, want error) {
		t.Helper()
		g, w := httpapi.AsError(got), httpapi.AsError(want)
		if g == nil || w == nil || g.Status != w.Status || g.Code != w.Code {
			t.Errorf("%s: %v, an unknown id gets %v", what, got, want)
		}
		if status(got) != 404 && status(got) != 422 {
			t.Errorf("%s: %v", what, got)
		}
	}
	_, err := h.Get(ctxB, snap.ID)
	_, want := h.Get(ctxB, unknown)
	same("get", err, want)
	_, err = h.Delete(ctxB, snap.ID)
	_, want = h.Delete(ctxB, unknown)
	same("delete", err, want)
	_, err = h.Fork(ctxB, snap.ID, ForkRequest{Count: 1})
	_, want = h.Fork(ctxB, unknown, ForkRequest{Count: 1})
	same("fork", err, want)
	_, err = h.List(ctxB, sess.ID, 1, 10)
	_, want = h.List(ctxB, unknown, 1, 10)
	same("list of the session", err, want)
	_, err = h.Create(ctxB, sess.ID, CreateRequest{Name: "mine"})
	_, want = h.Create(ctxB, unknown, CreateRequest{Name: "mine"})
	same("snapshot the session", err, want)
	_, err = h.Restore(ctxB, sess.ID, RestoreRequest{SnapshotID: snap.ID})
	_, want = h.Restore(ctxB, unknown, RestoreRequest{SnapshotID: snap.ID})
	same("restore into the session", err, want)
	if l, err := h.List(ctxB, "", 1, 10); err != nil || l.Total != 0 || len(l.Snapshots) != 0 {
		t.Errorf("other tenant's list: %+v %v", l, err)
	}

	// A snapshot of the other tenant does not restore into b's own session.
	own := model.Session{ID: model.NewID(), Tenant: "b", Name: "b", Backend: "qemu", Machine: "mps2-an385", State: model.StateCreated, CreatedAt: time.Now()}
	if err := st.CreateSession(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	_, err = h.Restore(ctxB, own.ID, RestoreRequest{SnapshotID: snap.ID})
	_, want = h.Restore(ctxB, own.ID, RestoreRequest{SnapshotID: unknown})
	same("restore a foreign snapshot", err, want)

	// Nothing of a's was touched.
	if _, err := h.Get(ctxA, snap.ID); err != nil {
		t.Fatalf("after b's attempts: %v", err)
	}
	if _, err := blobs.Stat(context.Background(), model.SnapshotStateKey(snap.ID)); err != nil {
		t.Fatalf("state gone: %v", err)
	}
	if _, err := h.Delete(ctxA, snap.ID); err != nil {
		t.Fatalf("owner delete: %v", err)
	}
}

// Snapshots stored before tenants existed belong to the default tenant,
// which is also who a request without authentication is.
func TestUntenantedSnapshotsAreDefault(t *testing.T) {
	h, st, _ := setup(t)
	snap := model.Snapshot{ID: model.NewID(), SessionID: model.NewID(), Name: "old", CreatedAt: time.Now()}
	st.PutSnapshot(context.Background(), snap)
	if _, err := h.Get(context.Background(), snap.ID); err != nil {
		t.Fatalf("anonymous: %v", err)
	}
	ctxA := auth.WithPrincipal(context.Background(), auth.Principal{Tenant: "a"})
	if _, err := h.Get(ctxA, snap.ID); status(err) != 404 {
		t.Fatalf("tenant a: %v", err)
	}
}
