package auth

import (
	"errors"
	"fmt"
	"strings"
)

// MaxCredentialBytes caps an Authorization header (and a ?token=), so a
// huge header cannot make us parse or hash megabytes.
const MaxCredentialBytes = 8 << 10

// Kind is how a credential was presented.
type Kind int

// Credential kinds.
const (
	KindAPIKey Kind = iota + 1
	KindBearer
)

// Credential is a parsed Authorization header.
type Credential struct {
	Kind  Kind
	Value string
}

// Reasons for a header that cannot be parsed.
var (
	ErrMissing   = errors.New("missing credentials")
	ErrMalformed = errors.New("malformed authorization header")
)

// ParseAuthorization parses "ApiKey <key>" or "Bearer <jwt>": the scheme is
// case-insensitive, followed by exactly one space and exactly one
// credential of printable ASCII without spaces.
func ParseAuthorization(h string) (Credential, error) {
	if h == "" {
		return Credential{}, ErrMissing
	}
	if len(h) > MaxCredentialBytes {
		return Credential{}, malformed("longer than 8 KiB")
	}
	scheme, value, ok := strings.Cut(h, " ")
	if !ok || value == "" {
		return Credential{}, malformed("want \"ApiKey <key>\" or \"Bearer <token>\"")
	}
	var c Credential
	switch {
	case strings.EqualFold(scheme, "ApiKey"):
		c.Kind = KindAPIKey
	case strings.EqualFold(scheme, "Bearer"):
		c.Kind = KindBearer
	default:
		return Credential{}, malformed("unknown scheme; use ApiKey or Bearer")
	}
	for i := 0; i < len(value); i++ {
		if value[i] <= ' ' || value[i] >= 0x7f {
			return Credential{}, malformed("exactly one credential of printable characters is allowed after the scheme")
		}
	}
	c.Value = value
	return c, nil
}

func malformed(why string) error { return fmt.Errorf("%w: %s", ErrMalformed, why) }
