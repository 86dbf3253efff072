package auth

import (
	"context"
	"errors"
	"github.com/machineserver/machineserver/shared/fail"
	"slices"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// Scope is a permission a credential carries; routes declare the one they
// need (httpapi.Route).
type Scope = httpapi.Scope

const (
	ScopeRead  = httpapi.ScopeRead
	ScopeWrite = httpapi.ScopeWrite
	ScopeDebug = httpapi.ScopeDebug
	ScopeAdmin = httpapi.ScopeAdmin
)

// Scopes lists every scope, for error messages.
var Scopes = []Scope{ScopeRead, ScopeWrite, ScopeDebug, ScopeAdmin}

// DefaultTenant owns what is created without authentication (auth off, or
// in-cluster events without a tenant attribute).
const DefaultTenant = model.DefaultTenant

// Principal is who made a request: the actor (for the audit log), the tenant
// whose resources it may touch, and what it may do there.
type Principal struct {
	// Actor is "key:<id>" for API keys and "jwt:<sub>" for JWTs.
	Actor  string  `json:"actor"`
	Tenant string  `json:"tenant"`
	Scopes []Scope `json:"scopes"`
	// Session, when set, restricts the principal to that one session's
	// stream named by Purpose (a session-scoped console or gdb token).
	Session string `json:"session,omitempty"`
	Purpose string `json:"purpose,omitempty"`
}

// Has reports whether p carries scope s (admin implies all).
func (p Principal) Has(s Scope) bool {
	return slices.Contains(p.Scopes, s) || slices.Contains(p.Scopes, ScopeAdmin)
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the request's principal, if authentication ran.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// Tenant is the tenant new resources are created for.
func Tenant(ctx context.Context) string {
	p, _ := FromContext(ctx)
	return model.TenantOr(p.Tenant)
}

// Owns reports whether the request's tenant owns a resource of tenant t.
// Resources stored before tenants existed (t empty) belong to the default
// tenant. Callers answer 404, not 403, when it does not, so ids do not leak.
func Owns(ctx context.Context, t string) bool {
	return Tenant(ctx) == model.TenantOr(t)
}

// Hidden reports whether a record of tenant t, read with err, must be
// answered exactly like an unknown id: it is missing (model.ErrNotFound) or
// it is another tenant's. Lookups by id go through it, so ids do not leak.
func Hidden(ctx context.Context, t string, err error) bool {
	return errors.Is(err, model.ErrNotFound) || (err == nil && !Owns(ctx, t))
}

// Lookup reads a record of the caller's tenant by id with get (tenant says
// whose a record is). An id that is not one, a missing record and another
// tenant's all answer the same not found (naming the record's kind), so
// ids do not leak.
func Lookup[T any](ctx context.Context, kind, id string, get func(context.Context, string) (T, error), tenant func(T) string) (T, error) {
	var zero T
	if !model.ValidID(id) {
		return zero, fail.NotFound("%s %q not found (ids are 16 hex digits)", kind, id)
	}
	v, err := get(ctx, id)
	if Hidden(ctx, tenant(v), err) {
		return zero, fail.NotFound("%s %s not found", kind, id)
	}
	return v, err
}

// PlatformAdmin reports whether the request comes from an operator: an
// admin of the default tenant (or anyone when authentication is off). Only
// operators manage other tenants' keys, read their audit records and set
// quotas; an admin of another tenant is confined to that tenant.
func PlatformAdmin(ctx context.Context) bool {
	p, ok := FromContext(ctx)
	return ok && p.Has(ScopeAdmin) && model.TenantOr(p.Tenant) == DefaultTenant
}

// OwnPage keeps the caller's tenant's records of all (tenant reads a
// record's) and cuts page (from 1) of size from them; total is how many
// the caller owns. For indexes that are not per tenant.
func OwnPage[T any](ctx context.Context, all []T, tenant func(T) string, page, size int) (own []T, total int) {
	all = slices.DeleteFunc(all, func(x T) bool { return !Owns(ctx, tenant(x)) })
	off := (page - 1) * size
	lo, hi := min(off, len(all)), min(off+size, len(all))
	return all[lo:hi], len(all)
}
