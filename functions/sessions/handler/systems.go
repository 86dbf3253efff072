package handler

import (
	"context"
	"io"
	"net/http"
	"strconv"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// systemRoutes are systems of linked boards: their nodes are sessions
// (served by the session routes), their links observed and faulted here.
func (h *Handler) systemRoutes() []httpapi.Route {
	op := func(fn func(context.Context, string) (model.System, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s, err := fn(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}
	}
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/systems", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in model.SystemSpec
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			s, err := h.CreateSystem(r.Context(), in)
			httpapi.Created(w, r, s.ID, s, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/systems", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			p, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.ListSystems(r.Context(), p.Page, p.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}", Scope: httpapi.ScopeRead, Handler: op(h.System)},
		{Method: http.MethodDelete, Pattern: "/api/v1/systems/{id}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			if _, err := h.DeleteSystem(r.Context(), r.PathValue("id")); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/poweron", Scope: httpapi.ScopeWrite, Handler: op(h.PowerOnSystem)},
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/poweroff", Scope: httpapi.ScopeWrite, Handler: op(h.PowerOffSystem)},
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/reset", Scope: httpapi.ScopeWrite, Handler: op(h.ResetSystem)},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}/links/{link}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			l, err := h.Link(r.Context(), r.PathValue("id"), r.PathValue("link"))
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/links/{link}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var f model.LinkFaults
			if err := httpapi.DecodeJSON(r, &f, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.SetLinkFaults(r.Context(), r.PathValue("id"), r.PathValue("link"), f)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}/links/{link}/capture", Scope: httpapi.ScopeRead, Handler: h.linkCapture},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}/clock", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			c, err := h.SystemClock(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, c, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}/links/{link}/stream", Scope: httpapi.ScopeDebug, Handler: h.linkStream},
	}
}

// linkCapture is a UART link's records after ?after= as JSON, or an
// Ethernet link's frames as a pcap file.
func (h *Handler) linkCapture(w http.ResponseWriter, r *http.Request) {
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			httpapi.WriteError(w, r, httpapi.BadRequest("after must be a record sequence number >= 0; got %q", v))
			return
		}
		after = n
	}
	// An error before the first byte is still answered as one.
	cw := &countingWriter{w: w}
	err := h.LinkCapture(r.Context(), r.PathValue("id"), r.PathValue("link"), after, func(ct string) {
		w.Header().Set("Content-Type", ct)
	}, cw)
	if err != nil && cw.n == 0 {
		httpapi.WriteError(w, r, err)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// linkStream proxies the link's live WebSocket stream from the system's
// runner: a UART link's records, an Ethernet link's frames, as JSON
// messages.
func (h *Handler) linkStream(w http.ResponseWriter, r *http.Request) {
	l, rc, err := h.LinkOnRunner(r.Context(), r.PathValue("id"), r.PathValue("link"))
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	path := runnerapi.LinkStreamPath(l.RunnerLink)
	if l.Type == model.LinkEthernet {
		path = runnerapi.SegmentStreamPath(l.RunnerLink)
	}
	rc.Proxy(path).ServeHTTP(w, r)
}

// systemOps are the system commands over CloudEvents, each the same
// operation as its REST route, answered with the notification.
func (h *Handler) systemOps() map[string]cmdevent.Op {
	ref := func(typ string, fn func(context.Context, string) (model.System, error)) cmdevent.Op {
		return func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.SystemRef
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			if in.SystemID == "" {
				return cmdevent.Reply{}, httpapi.BadRequest("system_id is required")
			}
			s, err := fn(ctx, in.SystemID)
			return cmdevent.Reply{Type: typ, Subject: s.ID, Data: s}, err
		}
	}
	return map[string]cmdevent.Op{
		events.TypeSystemCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in model.SystemSpec
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.CreateSystem(ctx, in)
			return cmdevent.Reply{Type: events.TypeSystemCreated, Subject: s.ID, Data: s}, err
		},
		events.TypeSystemDelete:   ref(events.TypeSystemDeleted, h.DeleteSystem),
		events.TypeSystemPowerOn:  ref(events.TypeSystemStarted, h.PowerOnSystem),
		events.TypeSystemPowerOff: ref(events.TypeSystemStopped, h.PowerOffSystem),
		events.TypeSystemReset:    ref(events.TypeSystemRebooted, h.ResetSystem),
		events.TypeSystemSetLink: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.SetLink
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			if in.SystemID == "" || in.Link == "" {
				return cmdevent.Reply{}, httpapi.BadRequest("system_id and link are required")
			}
			l, err := h.SetLinkFaults(ctx, in.SystemID, in.Link, in.Faults)
			return cmdevent.Reply{Type: events.TypeSystemLinkChanged, Subject: in.SystemID, Data: events.LinkChanged{SystemID: in.SystemID, Link: l.Link}}, err
		},
	}
}
