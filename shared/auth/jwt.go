package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTOptions configure user JWT verification.
type JWTOptions struct {
	// HS256Secret verifies HS256/384/512 tokens.
	HS256Secret []byte
	// PublicKeyFiles hold PEM public keys (PKIX, PKCS#1 or certificates);
	// a key's kid is its file name without the extension.
	PublicKeyFiles []string
	// JWKSFile is a JSON Web Key Set of RSA and EC public keys.
	JWKSFile string
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer, Audience string
	// Algorithms allowed; empty means the ones the configured keys can
	// verify (HS256 for the secret, RS256 for RSA keys, ES256 for P-256 keys).
	Algorithms []string
	// TenantClaim names the claim holding the tenant (default "tenant").
	TenantClaim string
}

type publicKey struct {
	kid string
	key any // *rsa.PublicKey or *ecdsa.PublicKey
}

// JWTVerifier verifies user JWTs.
type JWTVerifier struct {
	secret      []byte
	keys        []publicKey
	algs        []string
	tenantClaim string
	parser      *jwt.Parser
}

var knownAlgs = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// NewJWTVerifier loads the keys; it returns nil (JWTs refused) when no key
// is configured.
func NewJWTVerifier(o JWTOptions) (*JWTVerifier, error) {
	v := &JWTVerifier{secret: o.HS256Secret, tenantClaim: o.TenantClaim}
	if v.tenantClaim == "" {
		v.tenantClaim = "tenant"
	}
	if len(v.secret) > 0 && len(v.secret) < 32 {
		return nil, errors.New("MS_JWT_HS256_SECRET must be at least 32 bytes")
	}
	for _, f := range o.PublicKeyFiles {
		ks, err := loadPEM(f)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, ks...)
	}
	if o.JWKSFile != "" {
		b, err := os.ReadFile(o.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("MS_JWT_JWKS_FILE: %w", err)
		}
		ks, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("MS_JWT_JWKS_FILE %s: %w", o.JWKSFile, err)
		}
		v.keys = append(v.keys, ks...)
	}
	if len(v.secret) == 0 && len(v.keys) == 0 {
		if len(o.Algorithms) > 0 {
			return nil, errors.New("MS_JWT_ALGORITHMS is set but no JWT key is configured (MS_JWT_HS256_SECRET, MS_JWT_PUBLIC_KEYS or MS_JWT_JWKS_FILE)")
		}
		return nil, nil
	}
	v.algs = o.Algorithms
	if len(v.algs) == 0 {
		if len(v.secret) > 0 {
			v.algs = append(v.algs, "HS256")
		}
		if slices.ContainsFunc(v.keys, func(k publicKey) bool { _, ok := k.key.(*rsa.PublicKey); return ok }) {
			v.algs = append(v.algs, "RS256")
		}
		if slices.ContainsFunc(v.keys, func(k publicKey) bool { _, ok := k.key.(*ecdsa.PublicKey); return ok }) {
			v.algs = append(v.algs, "ES256")
		}
	}
	for _, a := range v.algs {
		if !slices.Contains(knownAlgs, a) {
			return nil, fmt.Errorf("MS_JWT_ALGORITHMS: %q is not allowed; choose from %v", a, knownAlgs)
		}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.algs), jwt.WithExpirationRequired(), jwt.WithLeeway(30 * time.Second)}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Algorithms are the accepted algorithms.
func (v *JWTVerifier) Algorithms() []string { return v.algs }

// keyFor returns the keys that may verify t: the HMAC secret only for HS*
// and public keys only for RS*/PS*/ES*, so a public key can never serve as
// an HMAC secret (algorithm confusion).
func (v *JWTVerifier) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	var set jwt.VerificationKeySet
	add := func(match func(any) bool) {
		for _, k := range v.keys {
			if match(k.key) && (kid == "" || k.kid == kid) {
				set.Keys = append(set.Keys, k.key)
			}
		}
		if len(set.Keys) == 0 && kid != "" {
			// An unknown kid falls back to every key of the right type.
			for _, k := range v.keys {
				if match(k.key) {
					set.Keys = append(set.Keys, k.key)
				}
			}
		}
	}
	switch m := t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(v.secret) == 0 {
			return nil, errAlgNotAllowed
		}
		return v.secret, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		add(func(k any) bool { _, ok := k.(*rsa.PublicKey); return ok })
	case *jwt.SigningMethodECDSA:
		add(func(k any) bool {
			ek, ok := k.(*ecdsa.PublicKey)
			return ok && ek.Curve.Params().BitSize == m.CurveBits
		})
	default:
		return nil, errAlgNotAllowed
	}
	if len(set.Keys) == 0 {
		return nil, errAlgNotAllowed
	}
	return set, nil
}

var errAlgNotAllowed = errors.New("algorithm not allowed")

// Verify checks token and returns its principal; the error's text is the
// reason given to the client.
func (v *JWTVerifier) Verify(token string) (Principal, error) {
	if err := checkAlg(token, v.algs); err != nil {
		return Principal{}, err
	}
	var claims jwt.MapClaims
	_, err := v.parser.ParseWithClaims(token, &claims, v.keyFor)
	if err != nil {
		return Principal{}, jwtReason(err)
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return Principal{}, errors.New("token has no subject (sub)")
	}
	tenant, _ := claims[v.tenantClaim].(string)
	if tenant == "" {
		return Principal{}, fmt.Errorf("token has no %q claim naming its tenant", v.tenantClaim)
	}
	if err := ValidTenant(tenant); err != nil {
		return Principal{}, err
	}
	var names []string
	if s, ok := claims["scope"].(string); ok {
		names = strings.Fields(s)
	}
	if a, ok := claims["scopes"].([]any); ok {
		for _, s := range a {
			if s, ok := s.(string); ok {
				names = append(names, s)
			}
		}
	}
	var scopes []Scope
	for _, n := range names {
		// Scopes of other services in the same token are ignored.
		if slices.Contains(Scopes, Scope(n)) && !slices.Contains(scopes, Scope(n)) {
			scopes = append(scopes, Scope(n))
		}
	}
	return Principal{Actor: "jwt:" + sub, Tenant: tenant, Scopes: scopes}, nil
}

// checkAlg refuses a token whose header names an algorithm outside algs
// before anything else, so the reason is precise ("none" included).
func checkAlg(token string, algs []string) error {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return errors.New("malformed token")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return errors.New("malformed token")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return errors.New("malformed token")
	}
	if !slices.Contains(algs, h.Alg) {
		return fmt.Errorf("algorithm not allowed: %q (allowed: %s)", h.Alg, strings.Join(algs, ", "))
	}
	return nil
}

// jwtReason maps a golang-jwt error to the reason the client sees.
func jwtReason(err error) error {
	switch {
	case errors.Is(err, errAlgNotAllowed):
		return errAlgNotAllowed
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("malformed token")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("token has no expiry (exp)")
	case errors.Is(err, jwt.ErrTokenExpired):
		return errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errors.New("token not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("wrong audience")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errors.New("wrong issuer")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.New("bad signature")
	}
	return errors.New("invalid token")
}

// loadPEM reads every public key in a PEM file.
func loadPEM(path string) ([]publicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("MS_JWT_PUBLIC_KEYS: %w", err)
	}
	kid := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var out []publicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var k any
		switch blk.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
				k = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("MS_JWT_PUBLIC_KEYS %s: PEM block %q is not a public key", path, blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("MS_JWT_PUBLIC_KEYS %s: %w", path, err)
		}
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("MS_JWT_PUBLIC_KEYS %s: %w", path, err)
		}
		out = append(out, publicKey{kid: kid, key: k})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("MS_JWT_PUBLIC_KEYS %s: no PEM public key in the file", path)
	}
	return out, nil
}

func checkKey(k any) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits; at least 2048 are required", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T (RSA or ECDSA only)", k)
	}
	return nil
}

// parseJWKS reads the RSA and EC (P-256, P-384, P-521) keys of a JSON Web
// Key Set; keys for encryption ("use": "enc") are skipped.
func parseJWKS(b []byte) ([]publicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Kid, Use, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	var out []publicKey
	for i, j := range set.Keys {
		if j.Use == "enc" {
			continue
		}
		var k any
		switch j.Kty {
		case "RSA":
			n, err1 := base64.RawURLEncoding.DecodeString(j.N)
			e, err2 := base64.RawURLEncoding.DecodeString(j.E)
			if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("key %d (%s): bad RSA n or e", i, j.Kid)
			}
			k = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case "EC":
			curves := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}
			c, ok := curves[j.Crv]
			if !ok {
				return nil, fmt.Errorf("key %d (%s): unsupported curve %q", i, j.Kid, j.Crv)
			}
			x, err1 := base64.RawURLEncoding.DecodeString(j.X)
			y, err2 := base64.RawURLEncoding.DecodeString(j.Y)
			size := (c.Params().BitSize + 7) / 8
			if err := errors.Join(err1, err2); err != nil || len(x) != size || len(y) != size {
				return nil, fmt.Errorf("key %d (%s): bad EC x or y", i, j.Kid)
			}
			pk, err := ecdsa.ParseUncompressedPublicKey(c, append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("key %d (%s): %w", i, j.Kid, err)
			}
			k = pk
		default:
			continue
		}
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("key %d (%s): %w", i, j.Kid, err)
		}
		out = append(out, publicKey{kid: j.Kid, key: k})
	}
	if len(out) == 0 {
		return nil, errors.New("no usable RSA or EC signing key in the set")
	}
	return out, nil
}
