package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/audit"
	"github.com/machineserver/machineserver/shared/httpapi"
)

const (
	testIssuer   = "https://idp.example"
	testAudience = "machineserver"
	hsSecret     = "0123456789abcdef0123456789abcdef-hs256"
)

// rig is an authenticated test server: a mux with stand-ins for the real
// routes, behind the middleware.
type rig struct {
	a        *Authenticator
	srv      *httptest.Server
	rdb      redis.UniversalClient
	rsaKey   *rsa.PrivateKey
	rsaPEM   []byte
	ecKey    *ecdsa.PrivateKey
	adminKey string
	owners   map[string]string // session id -> tenant
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func miniRedis(t *testing.T) redis.UniversalClient {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func newRig(t *testing.T, mutate func(*Config)) *rig {
	t.Helper()
	r := &rig{rdb: miniRedis(t), owners: map[string]string{"s1": "default", "s2": "default", "other": "acme"}}
	var err error
	if r.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&r.rsaKey.PublicKey)
	r.rsaPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "idp.pem")
	os.WriteFile(pemFile, r.rsaPEM, 0o600)
	if r.ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwks, jwksOf(t, "ec1", &r.ecKey.PublicKey), 0o600)

	cfg := Config{
		Mode: "on", JWTSecret: hsSecret, JWTPublicKeys: []string{pemFile}, JWKSFile: jwks,
		JWTIssuer: testIssuer, JWTAudience: testAudience, JWTAlgorithms: []string{"HS256", "RS256", "ES256"},
		TenantClaim: "tenant", BootstrapKey: Secret("ms_boot_" + strings.Repeat("ab", 20)), AuditMaxEntries: 1000,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	r.adminKey = string(cfg.BootstrapKey)
	if r.a, err = New(context.Background(), Options{Config: cfg, Redis: r.rdb, Log: quietLog()}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	echo := func(w http.ResponseWriter, req *http.Request) {
		p, _ := FromContext(req.Context())
		httpapi.WriteJSON(w, http.StatusOK, p)
	}
	route := func(method, pattern string, scope Scope, h http.HandlerFunc) httpapi.Route {
		return httpapi.Route{Method: method, Pattern: pattern, Scope: scope, Handler: h}
	}
	httpapi.Mount(mux,
		route("GET", "/api/v1/sessions", ScopeRead, echo),
		route("POST", "/api/v1/sessions", ScopeWrite, echo),
		route("GET", "/api/v1/sessions/{id}/stream/gdb", ScopeDebug, echo),
		route("POST", "/events/sessions", ScopeWrite, echo),
		route("POST", "/{$}", httpapi.ScopePublic, echo),
		route("GET", "/health", httpapi.ScopePublic, echo),
		route("GET", "/metrics", ScopeAdmin, echo),
		route("GET", "/api/v1/sessions/{id}/stream/console", ScopeDebug, func(w http.ResponseWriter, req *http.Request) {
			if req.Header.Get("Upgrade") == "" {
				echo(w, req)
				return
			}
			c, err := websocket.Accept(w, req, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.Write(req.Context(), websocket.MessageText, []byte("hello"))
			c.Read(req.Context())
		}),
		route("POST", "/api/v1/sessions/{id}/tokens", ScopeDebug, SessionTokenHandler(func(ctx context.Context, id string) (string, error) {
			t, ok := r.owners[id]
			if !ok {
				return "", httpapi.NotFound("session %s not found", id)
			}
			return t, nil
		}).ServeHTTP),
		// Operations whose answers differ from what they report, so the
		// audit test shows which one the record takes.
		route("POST", "/api/v1/things", ScopeWrite, func(w http.ResponseWriter, req *http.Request) {
			httpapi.Created(w, req, "t1", map[string]string{"id": "decoy"}, nil)
		}),
		route("POST", "/api/v1/things/{id}/fail", ScopeWrite, func(w http.ResponseWriter, req *http.Request) {
			httpapi.WriteError(w, req, httpapi.NotFound("thing %s not found", req.PathValue("id")))
		}),
		route("POST", "/api/v1/things/{id}/boom", ScopeWrite, func(w http.ResponseWriter, req *http.Request) {
			httpapi.WriteError(w, req, errors.New("disk on fire"))
		}),
		route("POST", "/api/v1/things/{id}/raw", ScopeWrite, func(w http.ResponseWriter, req *http.Request) {
			httpapi.WriteJSON(w, http.StatusConflict, map[string]any{"error": map[string]string{"message": "decoy"}})
		}),
	)
	// Mounted without a declared scope: refused to everyone, even an admin.
	mux.HandleFunc("GET /api/v1/undeclared", echo)
	httpapi.Mount(mux, r.a.Routes()...)
	r.srv = httptest.NewServer(r.a.Middleware(mux))
	t.Cleanup(r.srv.Close)
	return r
}

func jwksOf(t *testing.T, kid string, k *ecdsa.PublicKey) []byte {
	b, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	n := (len(b) - 1) / 2
	enc := base64.RawURLEncoding.EncodeToString
	j, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig", "x": enc(b[1 : 1+n]), "y": enc(b[1+n:]),
	}}})
	return j
}

// do sends a request with the Authorization header h (none when empty).
func (r *rig) do(t *testing.T, method, path, h string, body string) (int, []byte, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, r.srv.URL+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if h != "" {
		req.Header.Set("Authorization", h)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func claims(over map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": "alice", "tenant": "acme", "scope": "read write", "iss": testIssuer,
		"aud": testAudience, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func errMessage(b []byte) string {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	return e.Error.Code + ": " + e.Error.Message
}

// lastAudit is the newest audit record.
func (r *rig) lastAudit(t *testing.T) audit.Record {
	t.Helper()
	recs, err := r.a.Audit().Query(context.Background(), audit.Filter{Limit: 1})
	if err != nil || len(recs) == 0 {
		t.Fatalf("no audit record: %v", err)
	}
	return recs[0]
}

// TestAuditTakesResultFromOperation: the record's error and created id are
// what the operation reported, never read back from the response body.
func TestAuditTakesResultFromOperation(t *testing.T) {
	r := newRig(t, nil)
	admin := "ApiKey " + r.adminKey
	for _, tc := range []struct {
		path     string
		code     int
		resource string
		err      string
	}{
		{"/api/v1/things", 201, "t1", ""},
		{"/api/v1/things/x/fail", 404, "x", "thing x not found"},
		{"/api/v1/things/x/boom", 500, "x", "internal error; the server log has details"},
		{"/api/v1/things/x/raw", 409, "x", "Conflict"},
	} {
		if code, body, _ := r.do(t, "POST", tc.path, admin, ""); code != tc.code {
			t.Fatalf("POST %s: %d %s", tc.path, code, body)
		}
		rec := r.lastAudit(t)
		if rec.Result != tc.code || rec.Resource != tc.resource || rec.Error != tc.err {
			t.Errorf("POST %s: audit %+v, want result %d resource %q error %q", tc.path, rec, tc.code, tc.resource, tc.err)
		}
	}
}

func TestAuthFailuresAre401WithReasonAndAudited(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	revoked, revokedKey, err := r.a.Keys().Create(ctx, "old", "acme", []Scope{ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Keys().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	_, otherRSA := mustRSA(t)
	hs := func(over map[string]any) string {
		return "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(hsSecret), claims(over))
	}
	none := "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))
	// The classic confusion: HMAC "signed" with the RSA public key's PEM.
	confused := "Bearer " + sign(t, jwt.SigningMethodHS256, r.rsaPEM, claims(nil))
	_, goodSecret, _ := strings.Cut(strings.TrimPrefix(r.adminKey, "ms_"), "_")

	for _, tc := range []struct{ name, header, reason string }{
		{"no header", "", "missing credentials"},
		{"unknown scheme", "Basic dXNlcjpwYXNz", "malformed authorization header"},
		{"two credentials", "ApiKey a b", "malformed authorization header"},
		{"malformed key", "ApiKey nope", "malformed key"},
		{"unknown key", "ApiKey ms_nosuchkey_" + goodSecret, "unknown key"},
		{"wrong secret", "ApiKey ms_boot_" + strings.Repeat("cd", 20), "unknown key"},
		{"revoked key", "ApiKey " + revokedKey, "revoked key"},
		{"expired jwt", hs(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), "token expired"},
		{"no exp", hs(map[string]any{"exp": nil}), "token has no expiry"},
		{"nbf in the future", hs(map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}), "token not valid yet"},
		{"wrong audience", hs(map[string]any{"aud": "someone-else"}), "wrong audience"},
		{"wrong issuer", hs(map[string]any{"iss": "https://evil.example"}), "wrong issuer"},
		{"wrong hs signature", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), claims(nil)), "bad signature"},
		{"wrong rsa signature", "Bearer " + sign(t, jwt.SigningMethodRS256, otherRSA, claims(nil)), "bad signature"},
		{"alg none", none, "algorithm not allowed"},
		{"alg not in list", "Bearer " + sign(t, jwt.SigningMethodHS512, []byte(hsSecret), claims(nil)), "algorithm not allowed"},
		{"hs/rs confusion", confused, "bad signature"},
		{"garbage bearer", "Bearer abc.def.ghi", "malformed token"},
		{"no tenant", hs(map[string]any{"tenant": nil}), "no \"tenant\" claim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := r.do(t, "GET", "/api/v1/sessions", tc.header, "")
			if code != http.StatusUnauthorized || !strings.Contains(errMessage(body), "unauthorized: ") || !strings.Contains(errMessage(body), tc.reason) {
				t.Fatalf("got %d %s, want 401 with %q", code, body, tc.reason)
			}
			if len(hdr.Values("WWW-Authenticate")) == 0 {
				t.Error("no WWW-Authenticate header")
			}
			rec := r.lastAudit(t)
			if rec.Result != 401 || !strings.Contains(rec.Error, tc.reason) || rec.Action != "GET /api/v1/sessions" {
				t.Errorf("audit record %+v, want 401 %q", rec, tc.reason)
			}
		})
	}
	// The revoked key's record names it.
	recs, _ := r.a.Audit().Query(ctx, audit.Filter{Actor: "key:" + revoked.ID})
	if len(recs) != 1 || recs[0].Tenant != "acme" {
		t.Errorf("audit of the revoked key: %+v", recs)
	}
}

// A verifier that allows only RS256 refuses an HS256 token made with the
// RSA public key, before any HMAC is computed.
func TestHSRSConfusionWithRSAOnly(t *testing.T) {
	r := newRig(t, func(c *Config) { c.JWTSecret = ""; c.JWTAlgorithms = nil; c.JWKSFile = "" })
	tok := sign(t, jwt.SigningMethodHS256, r.rsaPEM, claims(nil))
	code, body, _ := r.do(t, "GET", "/api/v1/sessions", "Bearer "+tok, "")
	if code != 401 || !strings.Contains(string(body), "algorithm not allowed") {
		t.Fatalf("got %d %s", code, body)
	}
	// The legitimate RS256 token works.
	code, body, _ = r.do(t, "GET", "/api/v1/sessions", "Bearer "+sign(t, jwt.SigningMethodRS256, r.rsaKey, claims(nil)), "")
	if code != 200 {
		t.Fatalf("RS256: %d %s", code, body)
	}
}

func mustRSA(t *testing.T) (*rsa.PublicKey, *rsa.PrivateKey) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey, k
}

func TestValidJWTs(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, []byte(hsSecret), claims(nil))},
		{"RS256 PEM", sign(t, jwt.SigningMethodRS256, r.rsaKey, claims(nil))},
		{"ES256 JWKS", sign(t, jwt.SigningMethodES256, r.ecKey, claims(map[string]any{"scope": nil, "scopes": []string{"read", "write", "other:thing"}}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := r.do(t, "GET", "/api/v1/sessions", "Bearer "+tc.tok, "")
			var p Principal
			json.Unmarshal(body, &p)
			if code != 200 || p.Actor != "jwt:alice" || p.Tenant != "acme" || fmt.Sprint(p.Scopes) != "[read write]" {
				t.Fatalf("got %d %s", code, body)
			}
		})
	}
}

func TestScopes(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	_, readKey, _ := r.a.Keys().Create(ctx, "reader", "acme", []Scope{ScopeRead})
	code, _, _ := r.do(t, "GET", "/api/v1/sessions", "ApiKey "+readKey, "")
	if code != 200 {
		t.Fatalf("read with read scope: %d", code)
	}
	for _, tc := range []struct{ method, path, scope string }{
		{"POST", "/api/v1/sessions", "write"},
		{"GET", "/api/v1/sessions/s1/stream/console", "debug"},
		{"POST", "/api/v1/sessions/s1/tokens", "debug"},
		{"GET", "/api/v1/admin/keys", "admin"},
		{"GET", "/api/v1/audit", "admin"},
	} {
		code, body, _ := r.do(t, tc.method, tc.path, "ApiKey "+readKey, "")
		if code != 403 || !strings.Contains(string(body), `needs the \"`+tc.scope+`\" scope`) {
			t.Errorf("%s %s: %d %s, want 403 naming %s", tc.method, tc.path, code, body, tc.scope)
		}
		if rec := r.lastAudit(t); rec.Result != 403 || rec.Tenant != "acme" {
			t.Errorf("audit %+v", rec)
		}
	}
	// A route mounted without a declared scope fails closed, even for an
	// admin; a path no route matches needs a credential and no scope.
	if code, body, _ := r.do(t, "GET", "/api/v1/undeclared", "ApiKey "+r.adminKey, ""); code != 403 || !strings.Contains(string(body), "declares no scope") {
		t.Errorf("undeclared route as admin: %d %s, want 403", code, body)
	}
	if code, _, _ := r.do(t, "GET", "/api/v1/nosuch", "ApiKey "+readKey, ""); code != 404 {
		t.Errorf("unknown path with a read key: %d, want 404", code)
	}
	if code, _, _ := r.do(t, "GET", "/api/v1/nosuch", "", ""); code != 401 {
		t.Errorf("unknown path without a key: %d, want 401", code)
	}
	// /health, /metrics and the in-cluster event ingress need nothing.
	for _, p := range []string{"/health", "/metrics"} {
		if code, _, _ := r.do(t, "GET", p, "", ""); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	req, _ := http.NewRequest("POST", r.srv.URL+"/", strings.NewReader("{}"))
	req.Header.Set("Ce-Source", "/ci")
	req.Header.Set("Ce-Type", "io.machineserver.session.create.v1")
	req.Header.Set("Ce-Tenant", "acme")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("POST /: %v %v", resp, err)
	}
	if rec := r.lastAudit(t); rec.Actor != "event:/ci" || rec.Tenant != "acme" || rec.Action != "POST / io.machineserver.session.create.v1" {
		t.Errorf("in-cluster event audit: %+v", rec)
	}
	// The standalone event ingress is authenticated.
	if code, _, _ := r.do(t, "POST", "/events/sessions", "", "{}"); code != 401 {
		t.Errorf("POST /events/sessions without a key: %d", code)
	}
}

func TestMetricsAuth(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MetricsAuth = true })
	if code, _, _ := r.do(t, "GET", "/metrics", "", ""); code != 401 {
		t.Errorf("/metrics without key: %d", code)
	}
	if code, _, _ := r.do(t, "GET", "/metrics", "ApiKey "+r.adminKey, ""); code != 200 {
		t.Errorf("/metrics with admin key: %d", code)
	}
}

func TestSessionTokens(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	_, debugKey, _ := r.a.Keys().Create(ctx, "dev", "default", []Scope{ScopeRead, ScopeDebug})
	issue := func(id, purpose string) (int, TokenResponse, []byte) {
		code, body, _ := r.do(t, "POST", "/api/v1/sessions/"+id+"/tokens", "ApiKey "+debugKey, `{"purpose":"`+purpose+`","ttl":"2m"}`)
		var tr TokenResponse
		json.Unmarshal(body, &tr)
		return code, tr, body
	}
	code, con, body := issue("s1", "console")
	if code != 201 || con.Token == "" || !strings.Contains(con.URL, "/api/v1/sessions/s1/stream/console?token=") {
		t.Fatalf("issue: %d %s", code, body)
	}
	if d := time.Until(con.ExpiresAt); d <= 0 || d > 2*time.Minute {
		t.Errorf("expires_at %v", con.ExpiresAt)
	}
	_, gdb, _ := issue("s1", "gdb")

	// Its own stream, as ?token= or as a bearer header.
	code, body, _ = r.do(t, "GET", "/api/v1/sessions/s1/stream/console?token="+con.Token, "", "")
	var p Principal
	json.Unmarshal(body, &p)
	if code != 200 || p.Session != "s1" || p.Purpose != "console" || p.Actor != "key:"+strings.Split(debugKey, "_")[1] {
		t.Fatalf("console with its token: %d %s", code, body)
	}
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions/s1/stream/gdb", "Bearer "+gdb.Token, ""); code != 200 {
		t.Fatalf("gdb with its token: %d %s", code, body)
	}
	for _, tc := range []struct{ name, method, path, header string }{
		{"other session", "GET", "/api/v1/sessions/s2/stream/console?token=" + con.Token, ""},
		{"other purpose", "GET", "/api/v1/sessions/s1/stream/gdb?token=" + con.Token, ""},
		{"gdb token on console", "GET", "/api/v1/sessions/s1/stream/console", "Bearer " + gdb.Token},
		{"not a stream", "GET", "/api/v1/sessions", "Bearer " + con.Token},
		{"query on other path", "GET", "/api/v1/sessions?token=" + con.Token, ""},
		{"mutating", "POST", "/api/v1/sessions", "Bearer " + con.Token},
		{"api key as query", "GET", "/api/v1/sessions/s1/stream/console?token=" + debugKey, ""},
	} {
		if code, body, _ := r.do(t, tc.method, tc.path, tc.header, ""); code != 401 {
			t.Errorf("%s: %d %s, want 401", tc.name, code, body)
		}
	}
	// Expired.
	old, _, _ := r.a.SessionTokens().sign(Principal{Actor: "key:x", Tenant: "default"}, "s1", "console", time.Now().Add(-time.Hour), time.Now().Add(-time.Minute))
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions/s1/stream/console?token="+old, "", ""); code != 401 || !strings.Contains(string(body), "token expired") {
		t.Errorf("expired token: %d %s", code, body)
	}
	// Signed by another process's secret (standalone secrets are random).
	other, _ := NewSessionTokens([]byte(strings.Repeat("z", 32)))
	forged, _, _ := other.Issue(Principal{Actor: "key:x", Tenant: "default"}, "s1", "console", time.Minute)
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions/s1/stream/console?token="+forged, "", ""); code != 401 || !strings.Contains(string(body), "bad signature") {
		t.Errorf("forged token: %d %s", code, body)
	}
	// Another tenant's session is not found; bad input is a 400.
	if code, _, body := issue("other", "console"); code != 404 {
		t.Errorf("other tenant's session: %d %s", code, body)
	}
	if code, _, body := issue("s1", "shell"); code != 400 {
		t.Errorf("bad purpose: %d %s", code, body)
	}
	code, body, _ = r.do(t, "POST", "/api/v1/sessions/s1/tokens", "ApiKey "+debugKey, `{"purpose":"console","ttl":"3h"}`)
	if code != 400 {
		t.Errorf("ttl 3h: %d %s", code, body)
	}
}

// A WebSocket attach is audited when it happens, while the stream is open.
func TestStreamAttachAudited(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(r.srv.URL, "http") + "/api/v1/sessions/s1/stream/console"
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + r.adminKey}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("read: %q %v", msg, err)
	}
	rec := r.lastAudit(t)
	if rec.Result != 101 || rec.Action != "GET /api/v1/sessions/{id}/stream/console" || rec.Resource != "s1" || rec.Actor != "key:boot" {
		t.Fatalf("attach record %+v", rec)
	}
}

func TestAdminKeysAPI(t *testing.T) {
	r := newRig(t, nil)
	admin := "ApiKey " + r.adminKey
	code, body, _ := r.do(t, "POST", "/api/v1/admin/keys", admin, `{"name":"ci","tenant":"acme","scopes":["read","write"]}`)
	var ck CreatedKey
	json.Unmarshal(body, &ck)
	if code != 201 || !strings.HasPrefix(ck.Secret, "ms_"+ck.ID+"_") || ck.Hash != "" || ck.Tenant != "acme" {
		t.Fatalf("create: %d %s", code, body)
	}
	for _, bad := range []string{`{"name":"x","scopes":["root"]}`, `{"name":"x","tenant":"Bad Tenant","scopes":["read"]}`, `{"scopes":["read"]}`, `{"name":"x","scopes":[]}`} {
		if code, body, _ := r.do(t, "POST", "/api/v1/admin/keys", admin, bad); code != 400 {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
	code, body, _ = r.do(t, "GET", "/api/v1/sessions", "ApiKey "+ck.Secret, "")
	var p Principal
	json.Unmarshal(body, &p)
	if code != 200 || p.Tenant != "acme" || p.Actor != "key:"+ck.ID {
		t.Fatalf("use: %d %s", code, body)
	}
	// Webhook senders that only know Bearer can use a key too.
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions", "Bearer "+ck.Secret, ""); code != 200 {
		t.Fatalf("key as bearer: %d %s", code, body)
	}
	code, body, _ = r.do(t, "GET", "/api/v1/admin/keys?tenant=acme", admin, "")
	var list struct{ Keys []Key }
	json.Unmarshal(body, &list)
	if code != 200 || len(list.Keys) != 1 || list.Keys[0].ID != ck.ID || list.Keys[0].Hash != "" || list.Keys[0].LastUsed == nil || strings.Contains(string(body), ck.Secret) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body, _ := r.do(t, "DELETE", "/api/v1/admin/keys/"+ck.ID, admin, ""); code != 200 || !strings.Contains(string(body), "revoked_at") {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions", "ApiKey "+ck.Secret, ""); code != 401 || !strings.Contains(string(body), "revoked key") {
		t.Fatalf("revoked: %d %s", code, body)
	}
	if code, _, _ := r.do(t, "DELETE", "/api/v1/admin/keys/nosuch", admin, ""); code != 404 {
		t.Errorf("revoke unknown: %d", code)
	}
	// A create is recorded with the id it made.
	recs, _ := r.a.Audit().Query(context.Background(), audit.Filter{Resource: ck.ID})
	if len(recs) == 0 || recs[len(recs)-1].Action != "POST /api/v1/admin/keys" || recs[len(recs)-1].Result != 201 {
		t.Errorf("create record: %+v", recs)
	}
	// Mutations are in the audit log, readable by an admin, filtered.
	code, body, _ = r.do(t, "GET", "/api/v1/audit?resource="+ck.ID+"&limit=1", admin, "")
	var got struct{ Records []audit.Record }
	json.Unmarshal(body, &got)
	if code != 200 || len(got.Records) != 1 || got.Records[0].Action != "DELETE /api/v1/admin/keys/{id}" || got.Records[0].Result != 200 || got.Records[0].Actor != "key:boot" {
		t.Fatalf("audit: %d %s", code, body)
	}
	if code, _, _ := r.do(t, "GET", "/api/v1/audit?since=yesterday", admin, ""); code != 400 {
		t.Errorf("bad since: %d", code)
	}
}

func TestAuthOff(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Mode = "off" })
	code, body, _ := r.do(t, "POST", "/api/v1/sessions", "", "")
	var p Principal
	json.Unmarshal(body, &p)
	if code != 200 || p.Tenant != DefaultTenant || !p.Has(ScopeAdmin) {
		t.Fatalf("auth off: %d %s", code, body)
	}
	if rec := r.lastAudit(t); rec.Actor != "anonymous" || rec.Result != 200 {
		t.Errorf("audit with auth off: %+v", rec)
	}
}

func TestConfigChecks(t *testing.T) {
	rdb := miniRedis(t)
	for name, c := range map[string]Config{
		"bad mode":           {Mode: "maybe"},
		"alg none":           {Mode: "on", JWTSecret: hsSecret, JWTAlgorithms: []string{"none"}},
		"unknown alg":        {Mode: "on", JWTSecret: hsSecret, JWTAlgorithms: []string{"XS256"}},
		"short hs secret":    {Mode: "on", JWTSecret: "short"},
		"algs without keys":  {Mode: "on", JWTAlgorithms: []string{"RS256"}},
		"missing pem":        {Mode: "on", JWTPublicKeys: []string{"/nonexistent.pem"}},
		"bad bootstrap":      {Mode: "on", BootstrapKey: "hunter2"},
		"short token secret": {Mode: "on", SessionTokenSecret: "short"},
	} {
		if _, err := New(context.Background(), Options{Config: c, Redis: rdb, Log: quietLog()}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(context.Background(), Options{Config: Config{Mode: "on"}, Redis: rdb, Log: quietLog(), Distributed: true}); err == nil || !strings.Contains(err.Error(), "MS_SESSION_TOKEN_SECRET") {
		t.Errorf("distributed without a session token secret: %v", err)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c := Config{Mode: "on", JWTSecret: "jwt-secret-value-0123456789abcdef", SessionTokenSecret: "session-secret-0123456789abcdefgh",
		BootstrapKey: "ms_boot_bootstrapsecret0123456789abcdef"}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "config", c, "secret", c.JWTSecret)
	out := buf.String() + fmt.Sprint(c) + fmt.Sprintf("%v %+v", c, c.BootstrapKey)
	j, _ := json.Marshal(c)
	out += string(j)
	for _, s := range []string{"jwt-secret-value", "session-secret", "bootstrapsecret"} {
		if strings.Contains(out, s) {
			t.Errorf("%q printed: %s", s, out)
		}
	}
}

func TestParseJWKS(t *testing.T) {
	for name, in := range map[string]string{
		"not json":   `{`,
		"empty":      `{"keys":[]}`,
		"bad curve":  `{"keys":[{"kty":"EC","crv":"P-192","x":"AA","y":"AA"}]}`,
		"off curve":  `{"keys":[{"kty":"EC","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 43) + `"}]}`,
		"small rsa":  `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"bad base64": `{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}`,
	} {
		if _, err := parseJWKS([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEventContext(t *testing.T) {
	e := eventWith(t, map[string]any{"tenant": "acme"})
	ctx, err := EventContext(context.Background(), e)
	if err != nil || Tenant(ctx) != "acme" {
		t.Fatalf("tenant from event: %v %v", Tenant(ctx), err)
	}
	ctx, _ = EventContext(context.Background(), eventWith(t, nil))
	if Tenant(ctx) != DefaultTenant {
		t.Errorf("no attribute: %s", Tenant(ctx))
	}
	if _, err := EventContext(context.Background(), eventWith(t, map[string]any{"tenant": "Not Valid"})); err == nil {
		t.Error("invalid tenant accepted")
	}
	// An authenticated caller's tenant wins over the attribute.
	authed := WithPrincipal(context.Background(), Principal{Actor: "key:k", Tenant: "mine"})
	ctx, _ = EventContext(authed, e)
	if Tenant(ctx) != "mine" {
		t.Errorf("authenticated: %s", Tenant(ctx))
	}
}

// Losing Redis loses the keys, but the configured bootstrap key comes back
// on its first use.
func TestBootstrapKeySurvivesFlush(t *testing.T) {
	r := newRig(t, nil)
	if err := r.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := r.do(t, "GET", "/api/v1/sessions", "ApiKey "+r.adminKey, ""); code != 200 {
		t.Fatalf("bootstrap key after a flush: %d %s", code, body)
	}
}

// An admin of a tenant other than default manages only its own tenant's
// keys and reads only its own audit records; the operator sees all.
func TestTenantAdminIsConfined(t *testing.T) {
	r := newRig(t, nil)
	op := "ApiKey " + r.adminKey
	mk := func(h, tenant string, scopes ...string) (int, map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"name": "k", "tenant": tenant, "scopes": scopes})
		code, b, _ := r.do(t, "POST", "/api/v1/admin/keys", h, string(body))
		var out map[string]any
		json.Unmarshal(b, &out)
		return code, out
	}
	code, acme := mk(op, "acme", "admin")
	if code != 201 {
		t.Fatalf("operator makes an acme admin key: %d", code)
	}
	acmeAdmin := "ApiKey " + acme["key"].(string)
	_, other := mk(op, "other", "read")
	if code, _ := mk(acmeAdmin, "other", "read"); code != 403 {
		t.Errorf("acme admin makes a key for another tenant: %d", code)
	}
	if code, k := mk(acmeAdmin, "", "read"); code != 201 || k["tenant"] != "acme" {
		t.Errorf("acme admin makes an acme key: %d %v", code, k)
	}
	code, b, _ := r.do(t, "GET", "/api/v1/admin/keys", acmeAdmin, "")
	if code != 200 || strings.Contains(string(b), `"other"`) || strings.Contains(string(b), `"default"`) {
		t.Errorf("acme admin lists keys: %d %s", code, b)
	}
	if code, _, _ := r.do(t, "GET", "/api/v1/admin/keys?tenant=other", acmeAdmin, ""); code != 403 {
		t.Errorf("acme admin lists another tenant's keys: %d", code)
	}
	if code, b, _ := r.do(t, "DELETE", "/api/v1/admin/keys/"+other["id"].(string), acmeAdmin, ""); code != 404 {
		t.Errorf("acme admin revokes another tenant's key: %d %s", code, b)
	}
	if code, b, _ := r.do(t, "GET", "/api/v1/audit?limit=1000", acmeAdmin, ""); code != 200 || strings.Contains(string(b), `"tenant": "default"`) {
		t.Errorf("acme admin reads the audit log: %d %s", code, b)
	}
	if code, _, _ := r.do(t, "GET", "/api/v1/audit?tenant=default", acmeAdmin, ""); code != 403 {
		t.Errorf("acme admin reads default's audit records: %d", code)
	}
	if code, b, _ := r.do(t, "GET", "/api/v1/audit?tenant=default&limit=1000", op, ""); code != 200 || !strings.Contains(string(b), `"tenant": "default"`) {
		t.Errorf("operator reads default's audit records: %d %s", code, b)
	}
}

// A flood of refusals is recorded at a bounded rate, so it cannot push the
// real records out of the trimmed audit stream.
func TestRefusalLimit(t *testing.T) {
	var l refusalLimit
	now := time.Now()
	n, reported := 0, 0
	for range 2 * refusalBurst {
		ok, dropped := l.allow(now)
		if ok {
			n++
		}
		reported += dropped
	}
	if n != refusalBurst {
		t.Fatalf("recorded %d of a burst of %d, want %d", n, 2*refusalBurst, refusalBurst)
	}
	// The first drop is reported at once, the rest a minute later.
	ok, dropped := l.allow(now.Add(time.Minute))
	if reported += dropped; !ok || reported != refusalBurst {
		t.Fatalf("a minute later: allowed %v, drops reported %d, want true and %d", ok, reported, refusalBurst)
	}
}

// Revoking a key also stops the session tokens it issued.
func TestSessionTokenDiesWithItsKey(t *testing.T) {
	r := newRig(t, nil)
	r.owners["0123456789abcdef"] = "acme"
	body, _ := json.Marshal(map[string]any{"name": "k", "tenant": "acme", "scopes": []string{"read", "write", "debug"}})
	code, b, _ := r.do(t, "POST", "/api/v1/admin/keys", "ApiKey "+r.adminKey, string(body))
	if code != 201 {
		t.Fatalf("make key: %d %s", code, b)
	}
	var k struct{ ID, Key string }
	json.Unmarshal(b, &k)
	code, b, _ = r.do(t, "POST", "/api/v1/sessions/0123456789abcdef/tokens", "ApiKey "+k.Key, `{"purpose":"console"}`)
	if code != 201 {
		t.Fatalf("issue token: %d %s", code, b)
	}
	var tok struct{ Token string }
	json.Unmarshal(b, &tok)
	path := "/api/v1/sessions/0123456789abcdef/stream/console?token=" + tok.Token
	if code, b, _ := r.do(t, "GET", path, "", ""); code != 200 {
		t.Fatalf("token before revocation: %d %s", code, b)
	}
	if code, b, _ := r.do(t, "DELETE", "/api/v1/admin/keys/"+k.ID, "ApiKey "+r.adminKey, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	if code, b, _ := r.do(t, "GET", path, "", ""); code != 401 || !strings.Contains(string(b), "revoked") {
		t.Fatalf("token after its key was revoked: %d %s", code, b)
	}
}
