package handler

import (
	"net/http"

	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// recordingRoutes are the recordings a recording session's power ons
// make, and the replay sessions made from them.
func (h *Handler) recordingRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/api/v1/recordings", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			p, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.ListRecordings(r.Context(), p.Page, p.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/recordings/{rid}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			rec, err := h.Recording(r.Context(), r.PathValue("rid"))
			httpapi.Reply(w, r, http.StatusOK, rec, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/recordings/{rid}/console", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			data, err := h.RecordingConsole(r.Context(), r.PathValue("rid"))
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(data)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/recordings/{rid}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			rec, err := h.DeleteRecording(r.Context(), r.PathValue("rid"))
			httpapi.Reply(w, r, http.StatusOK, rec, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/recordings/{rid}/sessions", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in session.ReplayRequest
			if r.ContentLength != 0 {
				if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
					httpapi.WriteError(w, r, err)
					return
				}
			}
			s, err := h.CreateReplay(r.Context(), r.PathValue("rid"), in)
			httpapi.Created(w, r, s.ID, s, err)
		}},
	}
}
