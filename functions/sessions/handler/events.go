package handler

import (
	"net/http"

	"github.com/machineserver/machineserver/shared/eventstream"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// eventRoutes is the caller's tenant's event stream (shared/eventstream):
// the sessions function serves it in a cluster, as the standalone server
// does, and every component's events reach it through Redis.
func (h *Handler) eventRoutes() []httpapi.Route {
	s := eventstream.New(h.d.State, h.d.Log)
	return []httpapi.Route{{Method: http.MethodGet, Pattern: "/api/v1/stream/events", Scope: httpapi.ScopeRead, Handler: s.ServeHTTP}}
}
