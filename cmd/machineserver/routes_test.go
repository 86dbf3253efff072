package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	jobs "github.com/machineserver/machineserver/functions/jobs/handler"
	programs "github.com/machineserver/machineserver/functions/programs/handler"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	snapshots "github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// wantScopes is every route's scope as auth.Required derived it from the
// URL before routes declared their own (recorded from that function before
// it was deleted), except that /health and POST / were served without a
// credential, which is now their declared scope. A new route must be added
// here, so nobody adds one without deciding its scope.
var wantScopes = map[string]httpapi.Scope{
	"GET /api/v1/capabilities":                      httpapi.ScopeRead,
	"POST /api/v1/sessions":                         httpapi.ScopeWrite,
	"GET /api/v1/sessions":                          httpapi.ScopeRead,
	"GET /api/v1/sessions/{id}":                     httpapi.ScopeRead,
	"DELETE /api/v1/sessions/{id}":                  httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/program":            httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/poweron":            httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/poweroff":           httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/reset":              httpapi.ScopeWrite,
	"GET /api/v1/sessions/{id}/console":             httpapi.ScopeRead,
	"POST /api/v1/sessions/{id}/console":            httpapi.ScopeDebug,
	"GET /api/v1/sessions/{id}/stream/console":      httpapi.ScopeDebug,
	"GET /api/v1/sessions/{id}/stream/gdb":          httpapi.ScopeDebug,
	"POST /api/v1/sessions/{id}/tokens":             httpapi.ScopeDebug,
	"GET /api/v1/sessions/{id}/gdb":                 httpapi.ScopeDebug,
	"POST /api/v1/sessions/{id}/coverage/start":     httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/coverage/stop":      httpapi.ScopeWrite,
	"GET /api/v1/sessions/{id}/coverage":            httpapi.ScopeRead,
	"POST /api/v1/coverage/merge":                   httpapi.ScopeWrite,
	"GET /api/v1/recordings":                        httpapi.ScopeRead,
	"GET /api/v1/recordings/{rid}":                  httpapi.ScopeRead,
	"GET /api/v1/recordings/{rid}/console":          httpapi.ScopeRead,
	"DELETE /api/v1/recordings/{rid}":               httpapi.ScopeWrite,
	"POST /api/v1/recordings/{rid}/sessions":        httpapi.ScopeWrite,
	"GET /api/v1/coverage/reports/{rid}":            httpapi.ScopeRead,
	"POST /api/v1/systems":                          httpapi.ScopeWrite,
	"GET /api/v1/systems":                           httpapi.ScopeRead,
	"GET /api/v1/systems/{id}":                      httpapi.ScopeRead,
	"DELETE /api/v1/systems/{id}":                   httpapi.ScopeWrite,
	"POST /api/v1/systems/{id}/poweron":             httpapi.ScopeWrite,
	"POST /api/v1/systems/{id}/poweroff":            httpapi.ScopeWrite,
	"POST /api/v1/systems/{id}/reset":               httpapi.ScopeWrite,
	"GET /api/v1/systems/{id}/links/{link}":         httpapi.ScopeRead,
	"POST /api/v1/systems/{id}/links/{link}":        httpapi.ScopeWrite,
	"GET /api/v1/systems/{id}/links/{link}/capture": httpapi.ScopeRead,
	"GET /api/v1/systems/{id}/links/{link}/stream":  httpapi.ScopeDebug,
	"POST /api/v1/programs":                         httpapi.ScopeWrite,
	"GET /api/v1/programs":                          httpapi.ScopeRead,
	"GET /api/v1/programs/{id}":                     httpapi.ScopeRead,
	"DELETE /api/v1/programs/{id}":                  httpapi.ScopeWrite,
	"POST /api/v1/programs/notifications":           httpapi.ScopeWrite,
	"POST /api/v1/jobs":                             httpapi.ScopeWrite,
	"GET /api/v1/jobs":                              httpapi.ScopeRead,
	"GET /api/v1/jobs/stats":                        httpapi.ScopeRead,
	"GET /api/v1/jobs/{id}":                         httpapi.ScopeRead,
	"DELETE /api/v1/jobs/{id}":                      httpapi.ScopeWrite,
	"GET /api/v1/jobs/{id}/console":                 httpapi.ScopeRead,
	"POST /api/v1/jobs/rules":                       httpapi.ScopeWrite,
	"GET /api/v1/jobs/rules":                        httpapi.ScopeRead,
	"DELETE /api/v1/jobs/rules/{id}":                httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/snapshots":          httpapi.ScopeWrite,
	"GET /api/v1/sessions/{id}/snapshots":           httpapi.ScopeRead,
	"GET /api/v1/snapshots":                         httpapi.ScopeRead,
	"GET /api/v1/snapshots/{sid}":                   httpapi.ScopeRead,
	"DELETE /api/v1/snapshots/{sid}":                httpapi.ScopeWrite,
	"POST /api/v1/sessions/{id}/restore":            httpapi.ScopeWrite,
	"POST /api/v1/snapshots/{sid}/sessions":         httpapi.ScopeWrite,
	"POST /api/v1/systems/{id}/snapshots":           httpapi.ScopeWrite,
	"GET /api/v1/systems/{id}/clock":                httpapi.ScopeRead,
	"GET /api/v1/systems/{id}/snapshots":            httpapi.ScopeRead,
	"POST /api/v1/systems/{id}/restore":             httpapi.ScopeWrite,
	"GET /api/v1/system-snapshots":                  httpapi.ScopeRead,
	"GET /api/v1/system-snapshots/{sid}":            httpapi.ScopeRead,
	"DELETE /api/v1/system-snapshots/{sid}":         httpapi.ScopeWrite,
	"POST /api/v1/system-snapshots/{sid}/systems":   httpapi.ScopeWrite,
	"POST /api/v1/admin/keys":                       httpapi.ScopeAdmin,
	"GET /api/v1/admin/keys":                        httpapi.ScopeAdmin,
	"DELETE /api/v1/admin/keys/{id}":                httpapi.ScopeAdmin,
	"GET /api/v1/audit":                             httpapi.ScopeAdmin,
	"GET /api/v1/quota":                             httpapi.ScopeRead,
	"GET /api/v1/stream/events":                     httpapi.ScopeRead,
	"GET /api/v1/admin/tenants/{tenant}/quota":      httpapi.ScopeAdmin,
	"PUT /api/v1/admin/tenants/{tenant}/quota":      httpapi.ScopeAdmin,
	"POST /events/sessions":                         httpapi.ScopeWrite,
	"POST /events/programs":                         httpapi.ScopeWrite,
	"POST /events/snapshots":                        httpapi.ScopeWrite,
	"POST /events/jobs":                             httpapi.ScopeWrite,
	"GET /metrics":                                  httpapi.ScopeAdmin,
	"GET /health":                                   httpapi.ScopePublic,
	"GET /api/v1/openapi.json":                      httpapi.ScopePublic,
	"GET /ui/":                                      httpapi.ScopePublic,
	"GET /ui":                                       httpapi.ScopePublic,
	"GET /{$}":                                      httpapi.ScopePublic,
	"POST /{$}":                                     httpapi.ScopePublic,
}

// TestRouteScopes checks every route the standalone server and each
// function's own Service serve: each declares a scope, the scope is the one
// the URL-shape rule gave before, and the mux dispatches a request for it
// to that declared route (so the authenticator reads the right scope).
func TestRouteScopes(t *testing.T) {
	seen := map[string]bool{}
	for name, rs := range servedRoutes(t) {
		mux := http.NewServeMux()
		httpapi.Mount(mux, rs...)
		for _, rt := range rs {
			key := rt.Method + " " + rt.Pattern
			seen[key] = true
			want, ok := wantScopes[key]
			switch {
			case rt.Scope == "":
				t.Errorf("%s: %s declares no scope", name, key)
			case !ok:
				t.Errorf("%s: %s (scope %q) is not in wantScopes; add it with the scope it needs", name, key, rt.Scope)
			case rt.Scope != want:
				t.Errorf("%s: %s declares %q, want %q", name, key, rt.Scope, want)
			}
			path := strings.ReplaceAll(wildcard.ReplaceAllString(rt.Pattern, "x"), "{$}", "")
			got, ok := httpapi.Matched(mux, httptest.NewRequest(rt.Method, path, nil))
			if !ok || got.Method != rt.Method || got.Pattern != rt.Pattern {
				t.Errorf("%s: %s %s dispatches to %s %s (declared route: %v)", name, rt.Method, path, got.Method, got.Pattern, ok)
			}
		}
	}
	for key := range wantScopes {
		if !seen[key] {
			t.Errorf("%s is in wantScopes but no server serves it", key)
		}
	}
}

// servedRoutes are the route tables of the standalone server ("standalone")
// and of each function's own Service (by name), each with the admin API
// that config.Guard mounts in front of them.
func servedRoutes(t *testing.T) map[string][]httpapi.Route {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	guard, err := auth.New(ctx, auth.Options{Config: auth.Config{Mode: "on"}, Redis: rdb, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sh := sessions.New(sessions.Deps{})
	ph, snh, jh := programs.New(programs.Deps{}), snapshots.New(snapshots.Deps{Sessions: sh.Service}), jobs.New(jobs.Deps{Sessions: sh.Service})
	standalone, err := routes(ctx, ph, sh, snh, jh)
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string][]httpapi.Route{"standalone": append(standalone, guard.Routes()...)}
	for name, fn := range map[string]config.Function{"programs": ph, "sessions": sh, "snapshots": snh, "jobs": jh} {
		rs, err := config.FunctionRoutes(ctx, fn)
		if err != nil {
			t.Fatal(err)
		}
		servers[name] = append(rs, guard.Routes()...)
	}
	return servers
}

var wildcard = regexp.MustCompile(`\{\w+\}`)
