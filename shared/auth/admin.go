package auth

import (
	"errors"
	"net/http"

	"github.com/machineserver/machineserver/shared/audit"
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

// Routes are the admin API (declared with the admin scope; an
// operator, see PlatformAdmin, manages every tenant's keys, the admin of
// another tenant only its own tenant's):
// POST /api/v1/admin/keys, GET /api/v1/admin/keys?tenant=,
// DELETE /api/v1/admin/keys/{id}, and GET /api/v1/audit.
func (a *Authenticator) Routes() []httpapi.Route {
	return append([]httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/admin/keys", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
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
			if in.Tenant != Tenant(r.Context()) && !PlatformAdmin(r.Context()) {
				httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "forbidden", "an admin of tenant %s makes keys for that tenant only", Tenant(r.Context())))
				return
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
			httpapi.Created(w, r, k.ID, CreatedKey{Key: k.public(), Secret: key}, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/admin/keys", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
			t := r.URL.Query().Get("tenant")
			if !PlatformAdmin(r.Context()) {
				if t != "" && t != Tenant(r.Context()) {
					httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "forbidden", "an admin of tenant %s lists that tenant's keys only", Tenant(r.Context())))
					return
				}
				t = Tenant(r.Context())
			}
			if t != "" {
				if err := ValidTenant(t); err != nil {
					httpapi.WriteError(w, r, httpapi.BadRequest("%v", err))
					return
				}
			}
			ks, err := a.keys.List(r.Context(), t)
			httpapi.Reply(w, r, http.StatusOK, map[string]any{"keys": ks}, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/admin/keys/{id}", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
			if !PlatformAdmin(r.Context()) {
				// Another tenant's key reads like an unknown one.
				k, err := a.keys.get(r.Context(), r.PathValue("id"))
				if err == nil && k.Tenant != Tenant(r.Context()) {
					err = ErrNotFound
				}
				if errors.Is(err, ErrNotFound) {
					httpapi.WriteError(w, r, httpapi.NotFound("key %s not found", r.PathValue("id")))
					return
				}
			}
			k, err := a.keys.Revoke(r.Context(), r.PathValue("id"))
			if errors.Is(err, ErrNotFound) {
				err = httpapi.NotFound("key %s not found", r.PathValue("id"))
			}
			httpapi.Reply(w, r, http.StatusOK, k, err)
		}},
	}, a.audit.Routes(func(r *http.Request, f *audit.Filter) error {
		if PlatformAdmin(r.Context()) {
			return nil
		}
		// A tenant's admin reads its own tenant's records only.
		if f.Tenant != "" && f.Tenant != Tenant(r.Context()) {
			return httpapi.Errorf(http.StatusForbidden, "forbidden", "an admin of tenant %s reads that tenant's audit records only", Tenant(r.Context()))
		}
		f.Tenant = Tenant(r.Context())
		return nil
	})...)
}
