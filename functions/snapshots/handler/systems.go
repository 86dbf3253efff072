package handler

import (
	"net/http"

	"github.com/machineserver/machineserver/functions/snapshots/snapshot"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Bodies of the system snapshot routes.
type (
	SystemList        = snapshot.SystemList
	SystemForkRequest = snapshot.SystemForkRequest
)

// systemRoutes are the system snapshot routes: a system saved at one
// point, restored in place or forked into a new system.
func (h *Handler) systemRoutes() []httpapi.Route {
	list := func(systemID func(*http.Request) string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			pg, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.ListSystem(r.Context(), systemID(r), pg.Page, pg.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}
	}
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/snapshots", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in CreateRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			v, err := h.CreateSystem(r.Context(), r.PathValue("id"), in)
			httpapi.Created(w, r, v.ID, v, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/systems/{id}/snapshots", Scope: httpapi.ScopeRead, Handler: list(func(r *http.Request) string { return r.PathValue("id") })},
		{Method: http.MethodPost, Pattern: "/api/v1/systems/{id}/restore", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in RestoreRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			sys, err := h.RestoreSystem(r.Context(), r.PathValue("id"), in)
			httpapi.Reply(w, r, http.StatusOK, sys, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/system-snapshots", Scope: httpapi.ScopeRead, Handler: list(func(*http.Request) string { return "" })},
		{Method: http.MethodGet, Pattern: "/api/v1/system-snapshots/{sid}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			v, err := h.GetSystem(r.Context(), r.PathValue("sid"))
			httpapi.Reply(w, r, http.StatusOK, v, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/system-snapshots/{sid}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			if _, err := h.DeleteSystem(r.Context(), r.PathValue("sid")); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/system-snapshots/{sid}/systems", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in SystemForkRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			sys, err := h.ForkSystem(r.Context(), r.PathValue("sid"), in)
			httpapi.Created(w, r, sys.ID, sys, err)
		}},
	}
}
