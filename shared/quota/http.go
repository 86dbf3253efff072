package quota

import (
	"net/http"
	"unicode"

	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Routes are GET /api/v1/quota (the caller's own tenant) and the admin
// GET/PUT /api/v1/admin/tenants/{tenant}/quota. The authentication
// middleware enforces the scopes they declare.
func (q *Quota) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/api/v1/quota", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			u, err := q.Usage(r.Context(), auth.Tenant(r.Context()))
			httpapi.Reply(w, r, http.StatusOK, u, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/admin/tenants/{tenant}/quota", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
			t, err := tenantParam(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			if t != auth.Tenant(r.Context()) && !auth.PlatformAdmin(r.Context()) {
				httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "forbidden", "an admin of tenant %s reads that tenant's quota only", auth.Tenant(r.Context())))
				return
			}
			u, err := q.Usage(r.Context(), t)
			httpapi.Reply(w, r, http.StatusOK, u, err)
		}},
		{Method: http.MethodPut, Pattern: "/api/v1/admin/tenants/{tenant}/quota", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
			t, err := tenantParam(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			// Quotas bound what a tenant may take: its own admin cannot raise them.
			if !auth.PlatformAdmin(r.Context()) {
				httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "forbidden", "only an admin of tenant %s (an operator) sets quotas", auth.DefaultTenant))
				return
			}
			var o Overrides
			if err := httpapi.DecodeJSON(r, &o, 4<<10); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			if err := q.SetOverrides(r.Context(), t, o); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			u, err := q.Usage(r.Context(), t)
			httpapi.Reply(w, r, http.StatusOK, u, err)
		}},
	}
}

func tenantParam(r *http.Request) (string, error) {
	t := r.PathValue("tenant")
	ok := t != "" && len(t) <= 128
	for _, c := range t {
		ok = ok && unicode.IsPrint(c) && !unicode.IsSpace(c)
	}
	if !ok {
		return "", httpapi.BadRequest("tenant must be 1 to 128 printable characters without spaces; got %q", t)
	}
	return t, nil
}
