package handler

import (
	"net/http"

	"github.com/machineserver/machineserver/functions/sessions/session"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
)

func (h *Handler) coverageRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/coverage/start", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, err := h.CoverageStart(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/sessions/{id}/coverage/stop", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			m, err := h.CoverageStop(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, m, err)
		}},
		// The live report: the window's counts so far (a snapshot while the
		// machine runs), not stored.
		{Method: http.MethodGet, Pattern: "/api/v1/sessions/{id}/coverage", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, c, err := h.LiveCounts(r.Context(), r.PathValue("id"))
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			h.writeReport(w, r, s.ProgramID, c, s.ID)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/coverage/merge", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in MergeRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			m, err := h.Merge(r.Context(), in)
			httpapi.Created(w, r, m.ID, m, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/coverage/reports/{rid}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			m, c, err := h.StoredReport(r.Context(), r.PathValue("rid"))
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			if r.URL.Query().Get("format") == "" {
				httpapi.WriteJSON(w, http.StatusOK, m)
				return
			}
			h.writeReport(w, r, m.ProgramID, c, m.ID)
		}},
	}
}

// writeReport answers counts of programID in the format ?format= asks for
// (json by default), with the files ?include= asks for.
func (h *Handler) writeReport(w http.ResponseWriter, r *http.Request, programID string, c report.Counts, name string) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "json"
	}
	if _, ok := session.CoverageFormats[format]; !ok {
		httpapi.WriteError(w, r, httpapi.BadRequest("format must be json, lcov, html or counts; got %q", format))
		return
	}
	include := r.URL.Query().Get("include")
	if include != "" && include != "program" && include != "all" {
		httpapi.WriteError(w, r, httpapi.BadRequest(`include must be "program" (the default: the program's own source files) or "all" (with the toolchain's and libraries' files); got %q`, include))
		return
	}
	b, err := h.Report(r.Context(), programID, c, format, name, include == "all")
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", session.CoverageFormats[format])
	if format == "html" {
		w.Header().Set("Content-Disposition", `attachment; filename="coverage-`+name+`.zip"`)
	}
	w.Write(b)
}
