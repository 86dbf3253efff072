package auth

import (
	"errors"
	"net/http"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// CreateKeyRequest is the body of POST /api/v1/admin/keys.
type CreateKeyRequest struct {
	Name string `json:"name"`
	// Tenant defaults to the caller's.
	Tenant string   `json:"tenant,omitempty"`
	Scopes []string `json:"scopes"`
}

// CreatedKey is the answer: the record and the key, shown only this once.
type CreatedKey struct {
	Key
	Secret string `json:"key"`
}

// Routes mounts the admin API (the middleware requires the admin scope,
// which is platform-wide: an admin manages every tenant's keys):
// POST /api/v1/admin/keys, GET /api/v1/admin/keys?tenant=,
// DELETE /api/v1/admin/keys/{id}, and GET /api/v1/audit.
func (a *Authenticator) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/admin/keys", func(w http.ResponseWriter, r *http.Request) {
		var in CreateKeyRequest
		if err := httpapi.DecodeJSON(r, &in, 16<<10); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if in.Name == "" || len(in.Name) > 100 {
			httpapi.WriteError(w, r, httpapi.BadRequest("name is required (1-100 characters)"))
			return
		}
		if in.Tenant == "" {
			in.Tenant = Tenant(r.Context())
		}
		if err := ValidTenant(in.Tenant); err != nil {
			httpapi.WriteError(w, r, httpapi.BadRequest("%v", err))
			return
		}
		scopes, err := ParseScopes(in.Scopes)
		if err != nil {
			httpapi.WriteError(w, r, httpapi.BadRequest("%v", err))
			return
		}
		k, key, err := a.keys.Create(r.Context(), in.Name, in.Tenant, scopes)
		httpapi.Reply(w, r, http.StatusCreated, CreatedKey{Key: k.public(), Secret: key}, err)
	})
	mux.HandleFunc("GET /api/v1/admin/keys", func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		if t != "" {
			if err := ValidTenant(t); err != nil {
				httpapi.WriteError(w, r, httpapi.BadRequest("%v", err))
				return
			}
		}
		ks, err := a.keys.List(r.Context(), t)
		httpapi.Reply(w, r, http.StatusOK, map[string]any{"keys": ks}, err)
	})
	mux.HandleFunc("DELETE /api/v1/admin/keys/{id}", func(w http.ResponseWriter, r *http.Request) {
		k, err := a.keys.Revoke(r.Context(), r.PathValue("id"))
		if errors.Is(err, ErrNotFound) {
			err = httpapi.NotFound("key %s not found", r.PathValue("id"))
		}
		httpapi.Reply(w, r, http.StatusOK, k, err)
	})
	a.audit.Routes(mux)
}
