package auth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/audit"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Options build an Authenticator.
type Options struct {
	Config Config
	// Redis holds the API keys and the audit stream.
	Redis redis.UniversalClient
	Log   *slog.Logger
	// Distributed requires MS_SESSION_TOKEN_SECRET: every replica must
	// accept the session tokens any replica issued.
	Distributed bool
}

// Authenticator authenticates requests, enforces scopes and writes the
// audit log.
type Authenticator struct {
	off         bool
	metricsAuth bool
	keys        *KeyStore
	jwt         *JWTVerifier
	tokens      *SessionTokens
	audit       *audit.Log
	log         *slog.Logger
	// bootstrap is MS_BOOTSTRAP_API_KEY, reinstalled if Redis loses it.
	bootstrap string
	// refusals bounds how fast 401s are written to the audit log: anyone
	// can cause them, and the log is trimmed by length, so a flood would
	// otherwise push the real records out.
	refusals refusalLimit
}

// refusalLimit is a token bucket: refusalRate records a second, bursts of
// refusalBurst; what it drops is counted and logged once a minute.
type refusalLimit struct {
	mu       sync.Mutex
	tokens   float64
	last     time.Time
	dropped  int
	reported time.Time
}

const (
	refusalRate  = 50
	refusalBurst = 500
)

// allow reports whether a refusal may be recorded now, and how many were
// dropped since the last report when it is time to report them.
func (l *refusalLimit) allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = refusalBurst
	} else {
		l.tokens = min(refusalBurst, l.tokens+now.Sub(l.last).Seconds()*refusalRate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		ok = true
	} else {
		l.dropped++
	}
	if l.dropped > 0 && now.Sub(l.reported) >= time.Minute {
		dropped, l.dropped, l.reported = l.dropped, 0, now
	}
	return ok, dropped
}

type authenticatorKey struct{}

// anonymous is everyone when authentication is off.
var anonymous = Principal{Actor: "anonymous", Tenant: DefaultTenant, Scopes: []Scope{ScopeAdmin}}

// New checks the configuration, loads the JWT keys and installs the
// bootstrap key.
func New(ctx context.Context, o Options) (*Authenticator, error) {
	c := o.Config
	if err := c.validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{
		off: !c.Enabled(), metricsAuth: c.MetricsAuth, keys: NewKeyStore(o.Redis),
		audit: audit.New(o.Redis, c.AuditMaxEntries, o.Log), log: o.Log,
	}
	var err error
	a.jwt, err = NewJWTVerifier(JWTOptions{
		HS256Secret: []byte(c.JWTSecret), PublicKeyFiles: c.JWTPublicKeys, JWKSFile: c.JWKSFile,
		Issuer: c.JWTIssuer, Audience: c.JWTAudience, Algorithms: c.JWTAlgorithms, TenantClaim: c.TenantClaim,
	})
	if err != nil {
		return nil, err
	}
	secret := []byte(c.SessionTokenSecret)
	if len(secret) == 0 {
		if o.Distributed && !a.off {
			return nil, errors.New("MS_SESSION_TOKEN_SECRET is required in the distributed form (at least 32 bytes, the same for every function), so any replica accepts the console and gdb tokens another issued")
		}
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	if a.tokens, err = NewSessionTokens(secret); err != nil {
		return nil, err
	}
	if c.BootstrapKey != "" {
		a.bootstrap = string(c.BootstrapKey)
		k, err := a.keys.EnsureKey(ctx, a.bootstrap, "bootstrap", DefaultTenant, []Scope{ScopeAdmin})
		if err != nil {
			return nil, fmt.Errorf("MS_BOOTSTRAP_API_KEY: %w", err)
		}
		if k.RevokedAt != nil {
			o.Log.Warn("the bootstrap API key is revoked; it stays revoked", "key_id", k.ID)
		} else {
			o.Log.Info("bootstrap API key installed", "key_id", k.ID, "tenant", k.Tenant, "scopes", k.Scopes)
		}
	}
	if a.off {
		o.Log.Warn("AUTHENTICATION IS OFF (MS_AUTH=off): every request is served as an admin of the default tenant; never expose this server")
	} else {
		o.Log.Info("authentication on", "config", c, "jwt_algorithms", a.jwtAlgorithms())
	}
	return a, nil
}

func (a *Authenticator) jwtAlgorithms() []string {
	if a.jwt == nil {
		return nil
	}
	return a.jwt.Algorithms()
}

// Enabled reports whether requests are authenticated.
func (a *Authenticator) Enabled() bool { return !a.off }

// Keys is the API key store.
func (a *Authenticator) Keys() *KeyStore { return a.keys }

// Audit is the audit log.
func (a *Authenticator) Audit() *audit.Log { return a.audit }

// SessionTokens is the session token signer.
func (a *Authenticator) SessionTokens() *SessionTokens { return a.tokens }

// authError is a refused credential: status 401 or 403 with the reason.
type authError struct {
	status int
	reason string
	// actor and tenant, as far as known, for the audit record.
	actor, tenant string
}

func (e *authError) Error() string { return e.reason }

func unauthorized(reason string) *authError {
	return &authError{status: http.StatusUnauthorized, reason: reason, actor: "anonymous"}
}

// authenticate finds the request's principal.
func (a *Authenticator) authenticate(r *http.Request) (Principal, *authError) {
	if a.off {
		return anonymous, nil
	}
	h := r.Header.Get("Authorization")
	qtok := r.URL.Query().Get("token")
	sid, purpose, stream := streamOf(r.URL.Path)
	stream = stream && r.Method == http.MethodGet
	if h == "" && qtok != "" {
		// Browsers cannot set headers on a WebSocket: a session token may
		// come as ?token=, on stream paths only, and nothing else may.
		if !stream {
			return Principal{}, unauthorized("?token= is accepted only on console and gdb stream paths")
		}
		if len(qtok) > MaxCredentialBytes {
			return Principal{}, unauthorized("malformed token")
		}
		if !isSessionToken(qtok) {
			return Principal{}, unauthorized("?token= must be a session token (POST /api/v1/sessions/{id}/tokens)")
		}
		return a.sessionToken(r.Context(), qtok, sid, purpose, stream)
	}
	c, err := ParseAuthorization(h)
	if err != nil {
		return Principal{}, unauthorized(err.Error())
	}
	// An API key is also accepted as a bearer token, for webhook senders
	// that can only send Bearer (MinIO's auth_token); JWTs never start
	// with "ms_".
	switch {
	case c.Kind == KindAPIKey || strings.HasPrefix(c.Value, keyPrefix):
		k, err := a.keys.Verify(r.Context(), c.Value)
		if errors.Is(err, ErrUnknownKey) && a.bootstrap != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(a.bootstrap)) == 1 {
			// Redis was flushed or replaced since start: the configured
			// bootstrap key is still the operator's way in.
			k, err = a.keys.EnsureKey(r.Context(), a.bootstrap, "bootstrap", DefaultTenant, []Scope{ScopeAdmin})
			if err == nil && k.RevokedAt != nil {
				err = keyErr{k: k, err: ErrRevokedKey}
			} else if err == nil {
				a.log.WarnContext(r.Context(), "bootstrap API key was missing from Redis; reinstalled", "key_id", k.ID)
			}
		}
		if err != nil {
			e := unauthorized(err.Error())
			var ke keyErr
			if errors.As(err, &ke) {
				e.actor, e.tenant = "key:"+ke.k.ID, ke.k.Tenant
			} else if id, _, perr := ParseKey(c.Value); perr == nil {
				e.actor = "key:" + id
			}
			if !errors.Is(err, ErrKeyFormat) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrRevokedKey) {
				a.log.ErrorContext(r.Context(), "api key lookup failed", "err", err)
				e = &authError{status: http.StatusServiceUnavailable, reason: "credentials cannot be checked now; retry", actor: e.actor}
			}
			return Principal{}, e
		}
		return k.Principal(), nil
	default:
		if isSessionToken(c.Value) {
			return a.sessionToken(r.Context(), c.Value, sid, purpose, stream)
		}
		if a.jwt == nil {
			return Principal{}, unauthorized("JWT authentication is not configured; use an API key")
		}
		p, err := a.jwt.Verify(c.Value)
		if err != nil {
			return Principal{}, unauthorized(err.Error())
		}
		return p, nil
	}
}

func (a *Authenticator) sessionToken(ctx context.Context, tok, sid, purpose string, stream bool) (Principal, *authError) {
	p, err := a.tokens.Verify(tok)
	if err != nil {
		return Principal{}, unauthorized(err.Error())
	}
	// A token dies with the key that issued it: revoking a key also stops
	// the console and gdb links it handed out.
	if id, ok := strings.CutPrefix(p.Actor, "key:"); ok {
		k, err := a.keys.get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound) || err == nil && k.RevokedAt != nil:
			e := unauthorized("the key that issued this session token is revoked")
			e.actor, e.tenant = p.Actor, p.Tenant
			return Principal{}, e
		case err != nil:
			return Principal{}, &authError{status: http.StatusServiceUnavailable, reason: "credentials cannot be checked now; retry", actor: p.Actor}
		}
	}
	if !stream || p.Session != sid || p.Purpose != purpose {
		e := unauthorized(fmt.Sprintf("this session token opens only the %s stream of session %s", p.Purpose, p.Session))
		e.actor, e.tenant = p.Actor, p.Tenant
		return Principal{}, e
	}
	return p, nil
}

// notificationsPath is the programs function's bucket webhook
// (programs.NotificationsPath; auth cannot import the function).
const notificationsPath = "/api/v1/programs/notifications"

// open reports whether a request is served without credentials: routes
// declared public (/health; a function's CloudEvents ingress, POST /, which
// only the in-cluster Broker reaches, as the HTTPRoute exposes /api/v1
// paths only), an unprotected /metrics, and the bucket-notification
// webhook: S3 stores (versitygw, AWS) cannot send a credential, and a
// notification only names objects that the programs function then reads
// from its watched buckets with its own credentials, so a forged one can
// register nothing that is not there; the function still asks for its
// webhook token (a query parameter a store can send) so strangers cannot
// make it read objects.
func (a *Authenticator) open(r *http.Request, rt httpapi.Route) bool {
	if rt.Scope == httpapi.ScopePublic {
		return true
	}
	switch rt.Pattern {
	case "/metrics":
		return !a.metricsAuth
	case notificationsPath:
		// Open to a store that sends no credential (the programs function
		// then requires its webhook token); a caller that does send one is
		// authenticated and audited like any other.
		return rt.Method == http.MethodPost && !a.off && r.Header.Get("Authorization") == ""
	}
	return false
}

// audited reports whether a request goes to the audit log when it passes:
// every mutating call and every console or gdb attach.
func audited(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
		return true
	}
	_, _, stream := streamOf(r.URL.Path)
	return stream
}

// Middleware authenticates every request to mux except the open routes,
// checks the scope the matched route declares (httpapi.Route), puts the
// principal in the request context and writes the audit log, whose action
// is the route pattern, never the raw path. A request no route matches
// needs a valid credential and no scope (it gets mux's 404 or 405); a
// route mounted without httpapi.Mount has no scope and is refused, so a
// forgotten declaration fails closed.
func (a *Authenticator) Middleware(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		rt, declared := h.(httpapi.Route)
		if a.open(r, rt) {
			if rt.Scope == httpapi.ScopePublic && r.Method == http.MethodPost {
				// In-cluster commands are not authenticated but still audited.
				a.serveAudited(w, r, mux, brokerRecord(r))
				return
			}
			mux.ServeHTTP(w, r)
			return
		}
		rec := audit.Record{Action: action(r, pattern), Resource: resource(pattern, r.URL.Path), RequestID: r.Header.Get("X-Request-Id")}
		p, aerr := a.authenticate(r)
		switch {
		case aerr != nil:
		case pattern != "" && !declared:
			a.log.ErrorContext(r.Context(), "route has no declared scope; mount it with httpapi.Mount", "pattern", pattern)
			aerr = &authError{status: http.StatusForbidden, actor: p.Actor, tenant: p.Tenant,
				reason: fmt.Sprintf("%s %s declares no scope, so it is refused to everyone", r.Method, r.URL.Path)}
		case declared && !p.Has(rt.Scope):
			aerr = &authError{status: http.StatusForbidden, actor: p.Actor, tenant: p.Tenant,
				reason: fmt.Sprintf("%s %s needs the %q scope; this credential has %v", r.Method, r.URL.Path, rt.Scope, p.Scopes)}
		}
		if aerr != nil {
			rec.Actor, rec.Tenant, rec.Result, rec.Error = aerr.actor, aerr.tenant, aerr.status, aerr.reason
			ok, dropped := true, 0
			if aerr.status == http.StatusUnauthorized {
				ok, dropped = a.refusals.allow(time.Now())
			}
			if dropped > 0 {
				a.log.WarnContext(r.Context(), "audit: refused requests arrive faster than they are recorded; some were not", "not_recorded", dropped, "rate_per_second", refusalRate)
			}
			if ok {
				a.audit.Write(r.Context(), rec)
			}
			writeAuthError(w, r, aerr)
			return
		}
		if p.Session != "" {
			// The token is spent on this path; it need not travel on to the runner.
			q := r.URL.Query()
			q.Del("token")
			r.URL.RawQuery = q.Encode()
		}
		ctx := context.WithValue(WithPrincipal(r.Context(), p), authenticatorKey{}, a)
		r = r.WithContext(ctx)
		if !audited(r) {
			mux.ServeHTTP(w, r)
			return
		}
		rec.Actor, rec.Tenant = p.Actor, p.Tenant
		a.serveAudited(w, r, mux, rec)
	})
}

// serveAudited serves r and writes rec with the outcome: the status sent,
// and the error and created id the operation reported (httpapi.Outcome).
func (a *Authenticator) serveAudited(w http.ResponseWriter, r *http.Request, next http.Handler, rec audit.Record) {
	ctx, out := httpapi.WithOutcome(r.Context())
	r = r.WithContext(ctx)
	rw := &recorder{ResponseWriter: w}
	write := func(status int) {
		rec.Result = status
		if status >= 400 {
			rec.Error = http.StatusText(status)
			if out.Err != nil && out.Err.Message != "" {
				rec.Error = out.Err.Message
			}
		}
		if rec.Resource == "" {
			// A create names its resource only in the answer.
			rec.Resource = out.Created
		}
		a.audit.Write(r.Context(), rec)
	}
	// A stream is audited when it attaches (the upgrade hijacks the
	// connection), not when it ends hours later.
	rw.onHijack = func() { rw.once.Do(func() { write(http.StatusSwitchingProtocols) }) }
	next.ServeHTTP(rw, r)
	rw.once.Do(func() { write(rw.statusOr200()) })
}

// brokerRecord is the audit record of an in-cluster command event, from its
// binary-mode headers (a structured event is recorded as "broker").
func brokerRecord(r *http.Request) audit.Record {
	rec := audit.Record{Actor: "broker", Tenant: DefaultTenant, Action: "POST /", RequestID: r.Header.Get("X-Request-Id")}
	if src := r.Header.Get("Ce-Source"); src != "" {
		rec.Actor = "event:" + src
	}
	if t := r.Header.Get("Ce-Tenant"); ValidTenant(t) == nil {
		rec.Tenant = t
	}
	if typ := r.Header.Get("Ce-Type"); typ != "" {
		rec.Action += " " + typ
	}
	return rec
}

func action(r *http.Request, pattern string) string {
	if pattern != "" {
		if !strings.Contains(pattern, " ") {
			pattern = r.Method + " " + pattern
		}
		return pattern
	}
	p := r.URL.Path
	if len(p) > 200 {
		p = p[:200] + "..."
	}
	return r.Method + " " + p + " (no route)"
}

// resource is the path's values of pattern's wildcards, "/"-joined.
func resource(pattern, path string) string {
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if i := strings.Index(pattern, "/"); i > 0 {
		pattern = pattern[i:] // drop a host
	}
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	var ids []string
	for i, s := range ps {
		if !strings.HasPrefix(s, "{") || s == "{$}" || i >= len(xs) {
			continue
		}
		if strings.HasSuffix(s, "...}") {
			ids = append(ids, strings.Join(xs[i:], "/"))
			break
		}
		ids = append(ids, xs[i])
	}
	return strings.Join(ids, "/")
}

func writeAuthError(w http.ResponseWriter, r *http.Request, e *authError) {
	code := "unauthorized"
	switch e.status {
	case http.StatusUnauthorized:
		desc := strings.ReplaceAll(e.reason, `"`, "'")
		w.Header().Add("WWW-Authenticate", `ApiKey realm="machineserver"`)
		w.Header().Add("WWW-Authenticate", fmt.Sprintf(`Bearer realm="machineserver", error="invalid_token", error_description=%q`, desc))
	case http.StatusForbidden:
		code = "forbidden"
	default:
		code = "unavailable"
	}
	httpapi.WriteError(w, r, httpapi.Errorf(e.status, code, "%s", e.reason))
}

// recorder captures the status for the audit record, and forwards Hijack
// (WebSocket upgrades, proxied or not) and Flush.
type recorder struct {
	http.ResponseWriter
	status   int
	once     sync.Once
	onHijack func()
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *recorder) statusOr200() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.onHijack()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *recorder) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }
