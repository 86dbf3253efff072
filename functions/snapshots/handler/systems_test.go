package handler

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// scriptedRunner answers the runner calls a system snapshot makes; a call
// whose path contains failOn is a 422.
type scriptedRunner struct {
	mu     sync.Mutex
	calls  []string
	failOn string
	st     *state.Store
	blobs  blob.Store
}

func (f *scriptedRunner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, runnerapi.Prefix)
	f.calls = append(f.calls, r.Method+" "+path)
	body, _ := io.ReadAll(r.Body)
	if f.failOn != "" && strings.Contains(path, f.failOn) {
		httpapi.WriteError(w, r, httpapi.Unprocessable("scripted failure of %s", path))
		return
	}
	id := strings.Split(path, "/")[2]
	switch {
	case strings.HasSuffix(path, "/snapshot"):
		var req runnerapi.SnapshotRequest
		json.Unmarshal(body, &req)
		blob.PutBytes(r.Context(), f.blobs, req.BlobKey, []byte("state of "+id), "")
		httpapi.WriteJSON(w, 200, runnerapi.SnapshotResult{Size: 10, SHA256: strings.Repeat("a", 64), EmulatorVersion: "7.2.0"})
		return
	case strings.HasSuffix(path, "/restore"), strings.HasSuffix(path, "/start"):
		f.st.UpdateSession(r.Context(), id, func(s *model.Session) error { s.State = model.StateRunning; return nil })
	case strings.HasSuffix(path, "/stop"):
		f.st.UpdateSession(r.Context(), id, func(s *model.Session) error { s.State = model.StateStopped; return nil })
	}
	httpapi.WriteJSON(w, 200, runnerapi.Status{})
}

// took are the calls made since from whose path ends in suffix.
func (f *scriptedRunner) took(from int, suffix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls[from:] {
		if strings.HasSuffix(c, suffix) {
			out = append(out, c)
		}
	}
	return out
}

func (f *scriptedRunner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// runningSystem is a two-node UART system on the scripted runner, powered
// on.
func runningSystem(t *testing.T) (*Handler, *state.Store, blob.Store, *scriptedRunner, model.System) {
	ctx := context.Background()
	st, err := state.OpenEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, _ := blob.NewFS(t.TempDir())
	f := &scriptedRunner{st: st, blobs: blobs}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	caps := board.Build("7.2.0", "qemu-system-arm", []string{"mps2-an385"}, []string{"cortex-m3"}, map[string]board.Probe{"mps2-an385": {Restores: true}})
	if err := st.RegisterRunner(ctx, state.Runner{ID: "r1", URL: srv.URL, Capacity: 4, Capabilities: caps}, time.Minute); err != nil {
		t.Fatal(err)
	}
	p := model.Program{ID: model.NewID(), Format: model.FormatBIN, Size: 64, SHA256: strings.Repeat("c", 64), Segments: []model.Segment{{Addr: 0, Size: 64}}}
	if err := st.PutProgram(ctx, p); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sh := session.New(session.Deps{State: st, Blobs: blobs, Publisher: events.Nop, RunnerToken: "t", Log: log})
	h := New(Deps{State: st, Blobs: blobs, Sessions: sh, Publisher: events.Nop, Log: log})
	node := func(name string) model.NodeSpec {
		return model.NodeSpec{Name: name, BoardConfig: model.BoardConfig{Board: "mps2-an385"}, ProgramID: p.ID}
	}
	sys, err := sh.CreateSystem(ctx, model.SystemSpec{Name: "pair", Nodes: []model.NodeSpec{node("gw"), node("sensor")},
		Links: []model.LinkSpec{{Type: model.LinkUART, Ends: []string{"gw:uart1", "sensor:uart1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if sys, err = sh.PowerOnSystem(ctx, sys.ID); err != nil {
		t.Fatal(err)
	}
	return h, st, blobs, f, sys
}

// A system snapshot pauses every node before it saves any, and resumes
// every node after; a node whose save fails undoes the other's part and
// still resumes both.
func TestSystemSnapshotAllOrNothing(t *testing.T) {
	h, st, blobs, f, sys := runningSystem(t)
	ctx := context.Background()
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID

	from := f.count()
	v, err := h.CreateSystem(ctx, sys.ID, CreateRequest{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	calls := slices.Clone(f.calls[from:])
	f.mu.Unlock()
	pausedAll, firstSave, lastSave, firstResume := -1, -1, -1, -1
	for i, c := range calls {
		switch {
		case strings.HasSuffix(c, "/pause"):
			pausedAll = i
		case strings.HasSuffix(c, "/snapshot"):
			if firstSave < 0 {
				firstSave = i
			}
			lastSave = i
		case strings.HasSuffix(c, "/resume") && firstResume < 0:
			firstResume = i
		}
	}
	if len(f.took(from, "/pause")) != 2 || len(f.took(from, "/snapshot")) != 2 || len(f.took(from, "/resume")) != 2 ||
		pausedAll > firstSave || lastSave > firstResume {
		t.Fatalf("calls: %v; want both paused, then both saved, then both resumed", calls)
	}
	if len(v.Nodes) != 2 || v.Size != 20 || v.Spec.Links[0].Ends[1] != "sensor:uart1" {
		t.Fatalf("manifest: %+v", v)
	}
	if _, err := blobs.Stat(ctx, model.SystemSnapshotManifestKey(v.ID)); err != nil {
		t.Fatalf("manifest not stored: %v", err)
	}

	f.failOn = "/sessions/" + sensor + "/snapshot"
	from = f.count()
	if _, err := h.CreateSystem(ctx, sys.ID, CreateRequest{Name: "two"}); status(err) != 422 || !strings.Contains(httpapi.AsError(err).Message, "node sensor") {
		t.Fatalf("a failing node: %v", err)
	}
	if len(f.took(from, "/resume")) != 2 {
		t.Fatalf("after a failed save the nodes were not both resumed: %v", f.calls[from:])
	}
	all, _, _ := st.ListSnapshots(ctx, "", 0, 100)
	if len(all) != 2 {
		t.Fatalf("snapshots after a failed system snapshot: %d, want the first system snapshot's 2", len(all))
	}
	list, _ := h.ListSystem(ctx, "", 1, 10)
	if list.Total != 1 {
		t.Fatalf("system snapshots: %+v", list)
	}
	f.failOn = ""

	// A restore that fails on one node leaves the system in error with
	// both nodes stopped, not half restored.
	f.failOn = "/sessions/" + gw + "/restore"
	from = f.count()
	if _, err := h.RestoreSystem(ctx, sys.ID, RestoreRequest{SnapshotID: v.ID}); status(err) != 422 || !strings.Contains(httpapi.AsError(err).Message, "node gw") {
		t.Fatalf("a failing restore: %v", err)
	}
	if len(f.took(from, "/stop")) != 2 || len(f.took(from, "/resume")) != 0 {
		t.Fatalf("after a failed restore: %v; want both nodes stopped and none resumed", f.calls[from:])
	}
	got, _ := st.GetSystem(ctx, sys.ID)
	if got.State != model.StateError || !strings.Contains(got.Reason, "node gw") {
		t.Fatalf("system after a failed restore: %s %q", got.State, got.Reason)
	}
	f.failOn = ""
	from = f.count()
	restored, err := h.RestoreSystem(ctx, sys.ID, RestoreRequest{SnapshotID: v.ID})
	if err != nil || restored.State != model.StateRunning {
		t.Fatalf("restore: %v %+v", err, restored)
	}
	if len(f.took(from, "/restore")) != 2 || len(f.took(from, "/resume")) != 2 {
		t.Fatalf("restore calls: %v", f.calls[from:])
	}
	// The link is taken off before the first restore (even on a system
	// whose restore failed and stopped it) and put back before the resume.
	f.mu.Lock()
	calls = slices.Clone(f.calls[from:])
	f.mu.Unlock()
	at := func(prefix string) int {
		return slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
	}
	firstRestore := slices.IndexFunc(calls, func(c string) bool { return strings.HasSuffix(c, "/restore") })
	if del, put, resume := at("DELETE /links/"), at("PUT /links/"), at("POST /sessions/"+gw+"/resume"); del < 0 || del > firstRestore || put < firstRestore || put > resume {
		t.Fatalf("restore calls: %v; want the link deleted, the nodes restored, the link put, the nodes resumed", calls)
	}

	// The index comes back from the manifests.
	st.DeleteSystemSnapshot(ctx, v.ID)
	if _, err := h.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := h.GetSystem(ctx, v.ID); err != nil || len(got.Nodes) != 2 {
		t.Fatalf("after reindex: %+v %v", got, err)
	}

	// The parts go with their system snapshot only.
	if _, err := h.Delete(ctx, v.Nodes[0].SnapshotID); status(err) != 409 {
		t.Fatalf("delete a part alone: %v", err)
	}
	if _, err := h.DeleteSystem(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if objs, _ := blobs.List(ctx, ""); len(objs) != 0 {
		t.Fatalf("blobs left: %v", objs)
	}
}

// Another tenant sees no system snapshot and cannot snapshot, restore or
// fork through one: each answer is the unknown id's.
func TestSystemSnapshotTenants(t *testing.T) {
	h, _, _, f, sys := runningSystem(t)
	v, err := h.CreateSystem(context.Background(), sys.ID, CreateRequest{Name: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	b := auth.WithPrincipal(context.Background(), auth.Principal{Actor: "key:b", Tenant: "b", Scopes: []auth.Scope{auth.ScopeAdmin}})
	from := f.count()
	for name, call := range map[string]func() error{
		"get":      func() error { _, err := h.GetSystem(b, v.ID); return err },
		"delete":   func() error { _, err := h.DeleteSystem(b, v.ID); return err },
		"fork":     func() error { _, err := h.ForkSystem(b, v.ID, SystemForkRequest{}); return err },
		"snapshot": func() error { _, err := h.CreateSystem(b, sys.ID, CreateRequest{Name: "theirs"}); return err },
		"restore":  func() error { _, err := h.RestoreSystem(b, sys.ID, RestoreRequest{SnapshotID: v.ID}); return err },
		"list":     func() error { _, err := h.ListSystem(b, sys.ID, 1, 10); return err },
	} {
		if err := call(); status(err) != 404 {
			t.Errorf("tenant b: %s: %v", name, err)
		}
	}
	if l, err := h.ListSystem(b, "", 1, 10); err != nil || l.Total != 0 {
		t.Errorf("tenant b lists %+v %v", l, err)
	}
	if f.count() != from {
		t.Errorf("tenant b reached the runner: %v", f.calls[from:])
	}
}
