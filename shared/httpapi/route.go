package httpapi

import (
	"fmt"
	"net/http"
)

// Scope is the permission a route needs (shared/auth checks it against the
// credential; it lives here so routes can be declared without importing auth).
type Scope string

const (
	// ScopePublic routes are served without a credential: /health and the
	// in-cluster CloudEvents ingress.
	ScopePublic Scope = "public"
	// ScopeRead lists and reads resources and console output.
	ScopeRead Scope = "read"
	// ScopeWrite creates, changes and deletes resources.
	ScopeWrite Scope = "write"
	// ScopeDebug writes to consoles and attaches debuggers.
	ScopeDebug Scope = "debug"
	// ScopeAdmin manages keys, quotas and reads the audit log; it implies
	// every other scope.
	ScopeAdmin Scope = "admin"
)

// Route is one endpoint, declared once: what it answers, the scope it
// needs, and its handler. Mounted on a ServeMux, the Route itself is the
// mux's handler, so middleware in front of the mux finds the matched
// route's scope with ServeMux.Handler instead of guessing from the path.
type Route struct {
	Method  string
	Pattern string
	Scope   Scope
	Handler http.HandlerFunc
}

func (rt Route) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.Handler(w, r) }

// Mount registers routes on mux. A route without a scope is a programming
// error: it panics at startup rather than serve a route nobody guards.
func Mount(mux *http.ServeMux, routes ...Route) {
	for _, rt := range routes {
		if rt.Scope == "" || rt.Method == "" || rt.Handler == nil {
			panic(fmt.Sprintf("httpapi: route %s %s needs a method, a scope and a handler", rt.Method, rt.Pattern))
		}
		mux.Handle(rt.Method+" "+rt.Pattern, rt)
	}
}

// Matched is the route mux would serve r with, if r matches one mounted
// with Mount.
func Matched(mux interface {
	Handler(*http.Request) (http.Handler, string)
}, r *http.Request) (Route, bool) {
	h, _ := mux.Handler(r)
	rt, ok := h.(Route)
	return rt, ok
}
