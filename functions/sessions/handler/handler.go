package handler

import (
	"context"
	"io"
	"maps"
	"net/http"
	"strconv"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// Deps are the session use cases' collaborators (session.Deps).
type Deps = session.Deps

// Request and answer bodies of the session routes, as the use cases take
// and give them.
type (
	List          = session.List
	CreateRequest = session.CreateRequest
	LoadRequest   = session.LoadRequest
	MergeRequest  = session.MergeRequest
)

// Handler is the sessions function's REST and CloudEvents adapter over the
// session use cases (session.Service, embedded: its operations are the
// handler's).
type Handler struct {
	*session.Service
	d      Deps
	source string
}

// New returns the handler.
func New(d Deps) *Handler {
	return &Handler{Service: session.New(d), d: d, source: events.Source("sessions")}
}

const maxBody = 64 << 10

// Routes are the REST API, each with the scope it needs.
func (h *Handler) Routes() []httpapi.Route {
	routes := []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/api/v1/capabilities", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			c, err := h.Capabilities(r.Context())
			httpapi.Reply(w, r, http.StatusOK, c, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in CreateRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			s, err := h.Create(r.Context(), in)
			httpapi.Created(w, r, s.ID, s, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			p, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.List(r.Context(), p.Page, p.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, err := h.Get(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/sessions/{id}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			_, err := h.Delete(r.Context(), r.PathValue("id"))
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/program", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in LoadRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			s, err := h.LoadProgram(r.Context(), r.PathValue("id"), in)
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/poweron", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			halted := false
			if v := r.URL.Query().Get("halted"); v != "" {
				b, err := strconv.ParseBool(v)
				if err != nil {
					httpapi.WriteError(w, r, httpapi.BadRequest("halted must be true or false; got %q", v))
					return
				}
				halted = b
			}
			s, err := h.PowerOn(r.Context(), r.PathValue("id"), halted)
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/poweroff", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, err := h.PowerOff(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/reset", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, err := h.Reset(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/console", Scope: httpapi.ScopeRead, Handler: h.console},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/console", Scope: httpapi.ScopeDebug, Handler: h.consoleInput},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/stream/console", Scope: httpapi.ScopeDebug, Handler: h.stream("console")},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/stream/gdb", Scope: httpapi.ScopeDebug, Handler: h.stream("gdb")},
		// Short-lived tokens that open only this session's console or gdb stream.
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/tokens", Scope: httpapi.ScopeDebug, Handler: auth.SessionTokenHandler(func(ctx context.Context, id string) (string, error) {
			s, err := h.Get(ctx, id)
			return s.Tenant, err
		}).ServeHTTP},
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/gdb", Scope: httpapi.ScopeDebug, Handler: func(w http.ResponseWriter, r *http.Request) {
			g, err := h.GDB(r.Context(), r.PathValue("id"), baseURL(r))
			httpapi.Reply(w, r, http.StatusOK, g, err)
		}},
	}
	for _, more := range [][]httpapi.Route{h.coverageRoutes(), h.recordingRoutes(), h.systemRoutes(), h.eventRoutes(), h.d.Quota.Routes()} {
		routes = append(routes, more...)
	}
	return routes
}

// console returns the UART history from ?offset= as raw bytes; the
// X-Console-Offset and X-Console-Next-Offset headers say where the bytes
// start and where to continue.
func (h *Handler) console(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := h.Get(r.Context(), id)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	off := int64(0)
	if v := q.Get("offset"); v != "" {
		if off, err = strconv.ParseInt(v, 10, 64); err != nil || off < 0 {
			httpapi.WriteError(w, r, httpapi.BadRequest("offset must be a byte offset >= 0; got %q", v))
			return
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			httpapi.WriteError(w, r, httpapi.BadRequest("limit must be a positive number of bytes; got %q", v))
			return
		}
	}
	var data []byte
	var from, next int64
	rc, err := h.Runner(r.Context(), &s, false)
	if err == nil && rc != nil {
		data, from, next, err = rc.Console(r.Context(), id, q.Get("port"), off, limit)
	}
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(runnerapi.HeaderOffset, strconv.FormatInt(from, 10))
	w.Header().Set(runnerapi.HeaderNextOffset, strconv.FormatInt(next, 10))
	w.Write(data)
}

func (h *Handler) consoleInput(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := h.Get(r.Context(), id)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(data) > maxBody {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "console input is limited to %d bytes per request", maxBody))
		return
	}
	if s.State != model.StateRunning {
		httpapi.WriteError(w, r, httpapi.Conflict("session %s is not running (state %s); console input needs a running machine", id, s.State))
		return
	}
	rc, err := h.Runner(r.Context(), &s, false)
	if err == nil && rc == nil {
		err = httpapi.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
	}
	if err == nil {
		err = rc.Input(r.Context(), id, r.URL.Query().Get("port"), data)
	}
	httpapi.Reply(w, r, http.StatusOK, map[string]int{"written": len(data)}, err)
}

// stream proxies a WebSocket stream (the console or the gdb tunnel) to the
// session's runner, which owns the emulator, the console ring and the
// debugger endpoint.
func (h *Handler) stream(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		s, err := h.Get(r.Context(), id)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		rc, err := h.Runner(r.Context(), &s, false)
		if err == nil && rc == nil {
			err = httpapi.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
		}
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		rc.Proxy(runnerapi.SessionPath(id)+"/stream/"+kind).ServeHTTP(w, r)
	}
}

// baseURL is the API's external URL as the client sees it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// Events returns the CloudEvents receiver: each command type runs the same
// operation as its REST route and replies with the resulting notification.
func (h *Handler) Events(ctx context.Context) (http.Handler, error) {
	ref := func(e cloudevents.Event) (string, error) {
		var in events.SessionRef
		if err := cmdevent.Decode(e, &in); err != nil {
			return "", err
		}
		if in.SessionID == "" {
			return "", httpapi.BadRequest("session_id is required")
		}
		return in.SessionID, nil
	}
	simple := func(typ string, op func(context.Context, string) (model.Session, error)) cmdevent.Op {
		return func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			id, err := ref(e)
			if err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := op(ctx, id)
			return cmdevent.Reply{Type: typ, Subject: s.ID, Data: s}, err
		}
	}
	// A guest that crashes QEMU as it starts or resets is answered with
	// the failure, not with started or rebooted.
	orFailed := func(op cmdevent.Op) cmdevent.Op {
		return func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			r, err := op(ctx, e)
			if s, ok := r.Data.(model.Session); ok && err == nil && s.State == model.StateError {
				r.Type = events.TypeSessionFailed
			}
			return r, err
		}
	}
	ops := map[string]cmdevent.Op{
		events.TypeSessionCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.CreateSession
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.Create(ctx, CreateRequest{Name: in.Name, Backend: in.Backend, BoardConfig: in.BoardConfig})
			return cmdevent.Reply{Type: events.TypeSessionCreated, Subject: s.ID, Data: s}, err
		},
		events.TypeSessionLoadProgram: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.LoadProgram
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.LoadProgram(ctx, in.SessionID, LoadRequest{ProgramID: in.ProgramID})
			return cmdevent.Reply{Type: events.TypeSessionProgramLoaded, Subject: s.ID, Data: s}, err
		},
		events.TypeSessionDelete: simple(events.TypeSessionDeleted, h.Delete),
		events.TypeSessionPowerOn: orFailed(simple(events.TypeSessionStarted, func(ctx context.Context, id string) (model.Session, error) {
			return h.PowerOn(ctx, id, false)
		})),
		events.TypeSessionPowerOff: simple(events.TypeSessionStopped, h.PowerOff),
		events.TypeSessionReset:    orFailed(simple(events.TypeSessionRebooted, h.Reset)),
	}
	maps.Copy(ops, h.systemOps())
	return cmdevent.Handler(ctx, h.source, ops, h.d.Log)
}
