package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// SessionAudience is the aud of session-scoped tokens; user JWTs never
// carry it, and session tokens are accepted nowhere but on stream paths.
const SessionAudience = "machineserver-session"

// sessionKID marks a session token in its header, so the middleware knows
// which verifier to use (both still verify everything).
const sessionKID = "ms-session"

// Purposes of session tokens: the stream each one opens.
const (
	PurposeConsole = "console"
	PurposeGDB     = "gdb"
)

// Bounds of a session token's lifetime.
const (
	DefaultTokenTTL = 5 * time.Minute
	MaxTokenTTL     = time.Hour
)

// SessionTokens issues and verifies session-scoped stream tokens (HS256).
type SessionTokens struct {
	secret []byte
	parser *jwt.Parser
}

// NewSessionTokens returns a signer with secret (at least 32 bytes).
func NewSessionTokens(secret []byte) (*SessionTokens, error) {
	if len(secret) < 32 {
		return nil, errors.New("MS_SESSION_TOKEN_SECRET must be at least 32 bytes")
	}
	return &SessionTokens{secret: secret, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience(SessionAudience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
	)}, nil
}

type sessionClaims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
	Purpose   string `json:"purpose"`
	Tenant    string `json:"tenant"`
}

// Issue signs a token for p that opens session id's stream purpose until
// now+ttl.
func (s *SessionTokens) Issue(p Principal, id, purpose string, ttl time.Duration) (string, time.Time, error) {
	now := time.Now()
	return s.sign(p, id, purpose, now, now.Add(ttl))
}

func (s *SessionTokens) sign(p Principal, id, purpose string, iat, exp time.Time) (string, time.Time, error) {
	c := sessionClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: p.Actor, Audience: jwt.ClaimStrings{SessionAudience},
			IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(exp),
		},
		SessionID: id, Purpose: purpose, Tenant: p.Tenant,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = sessionKID
	signed, err := t.SignedString(s.secret)
	return signed, exp, err
}

// Verify checks a session token and returns its restricted principal.
func (s *SessionTokens) Verify(token string) (Principal, error) {
	if err := checkAlg(token, []string{"HS256"}); err != nil {
		return Principal{}, err
	}
	var c sessionClaims
	if _, err := s.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) { return s.secret, nil }); err != nil {
		return Principal{}, fmt.Errorf("session token: %w", jwtReason(err))
	}
	if c.SessionID == "" || (c.Purpose != PurposeConsole && c.Purpose != PurposeGDB) || c.Tenant == "" {
		return Principal{}, errors.New("session token: missing sid, purpose or tenant")
	}
	return Principal{Actor: c.Subject, Tenant: c.Tenant, Scopes: []Scope{ScopeRead, ScopeDebug},
		Session: c.SessionID, Purpose: c.Purpose}, nil
}

// isSessionToken reports whether a JWT's header marks it as a session token.
func isSessionToken(token string) bool {
	t, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		return false
	}
	kid, _ := t.Header["kid"].(string)
	return kid == sessionKID
}

// streamOf returns the session id and purpose of a stream path
// (/api/v1/sessions/{id}/stream/console or .../stream/gdb).
func streamOf(path string) (id, purpose string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/api/v1/sessions/")
	if !ok {
		return "", "", false
	}
	id, tail, ok := strings.Cut(rest, "/")
	if !ok || id == "" {
		return "", "", false
	}
	switch tail {
	case "stream/console":
		return id, PurposeConsole, true
	case "stream/gdb":
		return id, PurposeGDB, true
	}
	return "", "", false
}

// TokenRequest is the body of POST /api/v1/sessions/{id}/tokens.
type TokenRequest struct {
	Purpose string `json:"purpose"`
	// TTL is a Go duration ("30s", "5m"), 1s to 1h; default 5m.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse is the issued token; URL is the stream with the token as
// ?token=, ready for a browser or `msctl gdb --token`.
type TokenResponse struct {
	Token     string    `json:"token"`
	SessionID string    `json:"session_id"`
	Purpose   string    `json:"purpose"`
	ExpiresAt time.Time `json:"expires_at"`
	URL       string    `json:"url"`
}

// OwnerFunc returns the tenant owning session id (or the handler's error,
// e.g. a 404, when there is none).
type OwnerFunc func(ctx context.Context, id string) (tenant string, err error)

// SessionTokenHandler serves POST /api/v1/sessions/{id}/tokens: the caller
// (debug scope, checked by the middleware) must own the session. The signer
// comes from the request context, put there by Authenticator.Middleware, so
// the sessions handler needs no auth dependency of its own.
func SessionTokenHandler(owner OwnerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, _ := r.Context().Value(authenticatorKey{}).(*Authenticator)
		p, ok := FromContext(r.Context())
		if a == nil || !ok {
			httpapi.WriteError(w, r, httpapi.Unavailable("session tokens need the authentication middleware in front of this handler"))
			return
		}
		if p.Session != "" {
			httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "forbidden", "a session token cannot issue tokens"))
			return
		}
		var in TokenRequest
		if err := httpapi.DecodeJSON(r, &in, 4<<10); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if in.Purpose != PurposeConsole && in.Purpose != PurposeGDB {
			httpapi.WriteError(w, r, httpapi.BadRequest("purpose must be %q or %q; got %q", PurposeConsole, PurposeGDB, in.Purpose))
			return
		}
		ttl := DefaultTokenTTL
		if in.TTL != "" {
			d, err := time.ParseDuration(in.TTL)
			if err != nil || d < time.Second || d > MaxTokenTTL {
				httpapi.WriteError(w, r, httpapi.BadRequest("ttl must be a duration from 1s to 1h, like \"5m\"; got %q", in.TTL))
				return
			}
			ttl = d
		}
		id := r.PathValue("id")
		tenant, err := owner(r.Context(), id)
		if err == nil && !Owns(r.Context(), tenant) {
			err = httpapi.NotFound("session %s not found", id)
		}
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		tok, exp, err := a.tokens.Issue(p, id, in.Purpose, ttl)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		scheme := "ws"
		if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
			scheme = "wss"
		}
		u := fmt.Sprintf("%s://%s/api/v1/sessions/%s/stream/%s?token=%s", scheme, r.Host, id, in.Purpose, tok)
		httpapi.WriteJSON(w, http.StatusCreated, TokenResponse{Token: tok, SessionID: id, Purpose: in.Purpose, ExpiresAt: exp.UTC(), URL: u})
	}
}
