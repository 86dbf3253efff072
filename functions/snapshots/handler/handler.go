package handler

import (
	"context"
	"maps"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/snapshots/snapshot"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Deps are the snapshot use cases' collaborators (snapshot.Deps).
type Deps = snapshot.Deps

// Request and answer bodies of the snapshot routes, as the use cases take
// and give them.
type (
	List           = snapshot.List
	CreateRequest  = snapshot.CreateRequest
	RestoreRequest = snapshot.RestoreRequest
	ForkRequest    = snapshot.ForkRequest
)

// MaxFork bounds one fork request.
const MaxFork = snapshot.MaxFork

// Handler is the snapshots function's REST and CloudEvents adapter over the
// snapshot use cases (snapshot.Service, embedded: its operations are the
// handler's).
type Handler struct {
	*snapshot.Service
	d      Deps
	source string
}

// New returns the handler.
func New(d Deps) *Handler {
	return &Handler{Service: snapshot.New(d), d: d, source: events.SourceSnapshots}
}

const maxBody = 64 << 10

// Routes are the REST API, each with the scope it needs.
func (h *Handler) Routes() []httpapi.Route {
	list := func(sessionID func(*http.Request) string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			pg, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.List(r.Context(), sessionID(r), pg.Page, pg.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}
	}
	return append([]httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/snapshots", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in CreateRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			snap, err := h.Create(r.Context(), r.PathValue("id"), in)
			httpapi.Created(w, r, snap.ID, snap, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/snapshots", Scope: httpapi.ScopeRead, Handler: list(func(r *http.Request) string { return r.PathValue("id") })},
		{Method: http.MethodGet, Pattern: "/api/v1/snapshots", Scope: httpapi.ScopeRead, Handler: list(func(*http.Request) string { return "" })},
		{Method: http.MethodGet, Pattern: "/api/v1/snapshots/{sid}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			snap, err := h.Get(r.Context(), r.PathValue("sid"))
			httpapi.Reply(w, r, http.StatusOK, snap, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/snapshots/{sid}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			if _, err := h.Delete(r.Context(), r.PathValue("sid")); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/restore", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in RestoreRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			s, err := h.Restore(r.Context(), r.PathValue("id"), in)
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/snapshots/{sid}/sessions", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in ForkRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			ss, err := h.Fork(r.Context(), r.PathValue("sid"), in)
			httpapi.Reply(w, r, http.StatusCreated, map[string]any{"sessions": ss}, err)
		}},
	}, h.systemRoutes()...)
}

// Events returns the CloudEvents receiver for snapshot and system snapshot
// commands.
func (h *Handler) Events(ctx context.Context) (http.Handler, error) {
	ops := map[string]cmdevent.Op{
		events.TypeSnapshotCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.CreateSnapshot
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			snap, err := h.Create(ctx, in.SessionID, CreateRequest{Name: in.Name, Description: in.Description})
			return cmdevent.Reply{Type: events.TypeSnapshotCreated, Subject: snap.ID, Data: snap}, err
		},
		events.TypeSnapshotRestore: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.RestoreSnapshot
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.Restore(ctx, in.SessionID, RestoreRequest{SnapshotID: in.SnapshotID})
			if err != nil {
				return cmdevent.Reply{}, err
			}
			snap, err := h.Get(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSnapshotRestored, Subject: s.ID, Data: events.Restored{Snapshot: snap, Session: s}}, err
		},
		events.TypeSnapshotFork: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.ForkSnapshot
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			ss, err := h.Fork(ctx, in.SnapshotID, ForkRequest{Count: in.Count, NamePrefix: in.NamePrefix})
			if err != nil {
				return cmdevent.Reply{}, err
			}
			snap, err := h.Get(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSnapshotForked, Subject: snap.ID, Data: events.Forked{Snapshot: snap, Sessions: ss}}, err
		},
		events.TypeSnapshotDelete: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.SnapshotRef
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			snap, err := h.Delete(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSnapshotDeleted, Subject: snap.ID, Data: snap}, err
		},
	}
	maps.Copy(ops, h.systemEvents())
	return cmdevent.Handler(ctx, h.source, ops, h.d.Log)
}
