package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzParseAuthorization: no panic, and an accepted header has a known
// scheme and exactly one printable credential within the size cap.
func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{
		"", "ApiKey ms_abc_0123456789abcdef0123456789abcdef", "apikey x", "APIKEY  x", "Bearer a.b.c", "bearer a.b.c",
		"Bearer", "Bearer ", "Bearer a b", "Basic dXNlcjpwYXNz", "Bearer \x00", "Bearer é", "ApiKey\tx",
		"Bearer " + strings.Repeat("a", MaxCredentialBytes),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseAuthorization(h)
		if err != nil {
			return
		}
		if c.Kind != KindAPIKey && c.Kind != KindBearer {
			t.Fatalf("%q: kind %d", h, c.Kind)
		}
		if c.Value == "" || len(h) > MaxCredentialBytes || strings.ContainsAny(c.Value, " \t\r\n") {
			t.Fatalf("%q accepted as %q", h, c.Value)
		}
		if _, _, err := ParseKey(c.Value); err == nil && c.Kind == KindAPIKey && !strings.HasPrefix(c.Value, "ms_") {
			t.Fatalf("%q parsed as a key", c.Value)
		}
	})
}

// FuzzVerifyJWT feeds arbitrary tokens to the user JWT and session token
// verifiers: no panic, and nothing unsigned is ever accepted.
func FuzzVerifyJWT(f *testing.F) {
	secret := []byte(hsSecret)
	good, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "a", "tenant": "t", "exp": time.Now().Add(time.Hour).Unix(), "aud": testAudience, "iss": testIssuer,
	}).SignedString(secret)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "a"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, s := range []string{good, none, "", ".", "..", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "eyJhbGciOiJub25lIn0.e30.",
		good[:len(good)-2], strings.Replace(good, ".", "..", 1)} {
		f.Add(s)
	}
	v, err := NewJWTVerifier(JWTOptions{HS256Secret: secret, Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		f.Fatal(err)
	}
	st, _ := NewSessionTokens(secret)
	f.Fuzz(func(t *testing.T, tok string) {
		if p, err := v.Verify(tok); err == nil {
			// Only a correctly signed token can pass: re-check independently.
			if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return secret, nil }, jwt.WithValidMethods([]string{"HS256"})); err != nil {
				t.Fatalf("accepted %q as %+v, but it does not verify: %v", tok, p, err)
			}
		}
		st.Verify(tok)
		isSessionToken(tok)
	})
}
