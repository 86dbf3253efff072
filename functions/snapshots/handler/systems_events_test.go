package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/model"
)

// postSample sends the catalog's sample of typ, as tenant acme (the samples'),
// to the receiver and returns the answer.
func postSample(t *testing.T, recv http.Handler, typ string) *httptest.ResponseRecorder {
	t.Helper()
	b, err := events.Sample(typ)
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	e["tenant"] = "acme"
	b, _ = json.Marshal(e)
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(b))
	r.Header.Set("Content-Type", "application/cloudevents+json")
	w := httptest.NewRecorder()
	recv.ServeHTTP(w, r)
	return w
}

// The receiver takes every system snapshot command of the catalog: one
// about a system or system snapshot that does not exist is a 404, not an
// unknown type.
func TestSystemCommandsAreServed(t *testing.T) {
	h, _, _ := setup(t)
	recv, err := h.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{events.TypeSystemSnapshotCreate, events.TypeSystemRestore, events.TypeSystemSnapshotFork, events.TypeSystemSnapshotDelete} {
		if w := postSample(t, recv, typ); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d %s, want 404", typ, w.Code, w.Body.String())
		}
	}
}

// A delete command removes the system snapshot with its nodes' states and
// answers with the systemsnapshot.deleted notification, its last state.
func TestSystemSnapshotDeleteCommand(t *testing.T) {
	h, st, blobs := setup(t)
	ctx := context.Background()
	recv, err := h.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := events.Sample(events.TypeSystemSnapshotCreated)
	var sample struct{ Data model.SystemSnapshot }
	if err := json.Unmarshal(b, &sample); err != nil {
		t.Fatal(err)
	}
	v := sample.Data
	for _, n := range v.Nodes {
		st.PutSnapshot(ctx, model.Snapshot{ID: n.SnapshotID, Tenant: v.Tenant, Name: v.Name + "/" + n.Name, SessionID: model.NewID(), SystemSnapshotID: v.ID, CreatedAt: v.CreatedAt})
		blob.PutBytes(ctx, blobs, model.SnapshotStateKey(n.SnapshotID), []byte("state"), "")
	}
	if err := st.PutSystemSnapshot(ctx, v); err != nil {
		t.Fatal(err)
	}
	blob.PutBytes(ctx, blobs, model.SystemSnapshotManifestKey(v.ID), []byte("{}"), "")

	acme := auth.WithPrincipal(ctx, auth.Principal{Actor: "key:acme", Tenant: v.Tenant, Scopes: []auth.Scope{auth.ScopeAdmin}})
	if _, err := h.GetSystem(acme, v.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Delete(acme, v.Nodes[0].SnapshotID); status(err) != 409 {
		t.Fatalf("delete a node's state alone: %v, want a 409", err)
	}
	w := postSample(t, recv, events.TypeSystemSnapshotDelete)
	if w.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", w.Code, w.Body.String())
	}
	if got := w.Header().Get("ce-type"); got != events.TypeSystemSnapshotDeleted {
		t.Fatalf("reply type %q", got)
	}
	if got := w.Header().Get("ce-subject"); got != v.ID {
		t.Errorf("reply subject %q, want %s", got, v.ID)
	}
	var got model.SystemSnapshot
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.ID != v.ID || len(got.Nodes) != len(v.Nodes) {
		t.Errorf("reply data %s: %v", w.Body.String(), err)
	}
	for _, p := range []string{"snapshots/", "system-snapshots/"} {
		if objs, _ := blobs.List(ctx, p); len(objs) != 0 {
			t.Errorf("left under %s: %v", p, objs)
		}
	}
	if _, err := h.GetSystem(acme, v.ID); status(err) != 404 {
		t.Errorf("get after delete: %v", err)
	}
	// The node's state, not deletable alone, went with it.
	if _, err := st.GetSnapshot(ctx, v.Nodes[0].SnapshotID); err == nil {
		t.Error("a node's state outlived its system snapshot")
	}
	if w := postSample(t, recv, events.TypeSystemSnapshotDelete); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), v.ID) {
		t.Errorf("second delete: %d %s", w.Code, w.Body.String())
	}
}
