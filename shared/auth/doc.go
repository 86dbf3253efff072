// Package auth owns who a request is: API keys (ms_<id>_<secret>, stored
// hashed in Redis), JWT verification (HS256 with a secret, RS256/ES256 with
// PEM keys or a JWKS file, an allowed-algorithm list), session-scoped
// console and gdb tokens, the principal (actor, tenant, scopes) carried in a
// request's context, the HTTP middleware that authenticates every /api/v1
// route, checks the scope the matched route declares (httpapi.Route) and
// writes the audit log, and the admin API for keys.
package auth
