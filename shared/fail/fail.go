// Package fail holds the domain errors: what went wrong in the terms of the
// operation (not found, conflict, invalid input...), with a message that
// says what is wrong and what is allowed. Use cases return them; each
// transport maps the kind to its own codes (shared/httpapi to HTTP
// statuses), so no use case knows about HTTP.
package fail

import "fmt"

// Kind is a class of failure. Its text is the stable machine-readable code
// clients see.
type Kind string

const (
	KindInvalid       Kind = "invalid_argument"
	KindNotFound      Kind = "not_found"
	KindConflict      Kind = "conflict"
	KindUnprocessable Kind = "unprocessable"
	KindUnavailable   Kind = "unavailable"
	KindTooLarge      Kind = "too_large"
	KindForbidden     Kind = "forbidden"
)

// Error is a domain error.
type Error struct {
	Kind Kind
	// Code, when set, is a more specific code than the kind's (e.g.
	// no_matching_board for an unprocessable board request).
	Code    string
	Message string
	// Details is structured data for the client (e.g. the candidates a
	// board lookup considered).
	Details any
}

func (e *Error) Error() string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return string(e.Kind) + ": " + e.Message
}

// Is makes errors.Is(err, fail.ErrNotFound) and the other sentinels match
// any *Error of that kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Kind == e.Kind
}

// Sentinels for errors.Is, one per kind.
var (
	ErrInvalid       = &Error{Kind: KindInvalid}
	ErrNotFound      = &Error{Kind: KindNotFound}
	ErrConflict      = &Error{Kind: KindConflict}
	ErrUnprocessable = &Error{Kind: KindUnprocessable}
	ErrUnavailable   = &Error{Kind: KindUnavailable}
)

func newf(k Kind, format string, args []any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Invalid is bad input.
func Invalid(format string, args ...any) *Error { return newf(KindInvalid, format, args) }

// NotFound is a resource that does not exist (or is another tenant's).
func NotFound(format string, args ...any) *Error { return newf(KindNotFound, format, args) }

// Conflict is a request the resource's current state does not allow.
func Conflict(format string, args ...any) *Error { return newf(KindConflict, format, args) }

// Unprocessable is well-formed input that cannot be acted on.
func Unprocessable(format string, args ...any) *Error { return newf(KindUnprocessable, format, args) }

// Unavailable is a dependency that cannot serve now; retrying may help.
func Unavailable(format string, args ...any) *Error { return newf(KindUnavailable, format, args) }

// TooLarge is input over a size limit.
func TooLarge(format string, args ...any) *Error { return newf(KindTooLarge, format, args) }

// Forbidden is an operation the caller may not do.
func Forbidden(format string, args ...any) *Error { return newf(KindForbidden, format, args) }
