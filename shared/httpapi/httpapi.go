package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/machineserver/machineserver/shared/fail"
)

// Error is an API error with the HTTP status it maps to. Code is a stable,
// machine-readable word; Message says what is wrong and what is allowed.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Constructors for the statuses the API uses.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "invalid_argument", format, args...)
}

func NotFound(format string, args ...any) *Error {
	return Errorf(http.StatusNotFound, "not_found", format, args...)
}

func Conflict(format string, args ...any) *Error {
	return Errorf(http.StatusConflict, "conflict", format, args...)
}

func Unprocessable(format string, args ...any) *Error {
	return Errorf(http.StatusUnprocessableEntity, "unprocessable", format, args...)
}

func Unavailable(format string, args ...any) *Error {
	return Errorf(http.StatusServiceUnavailable, "unavailable", format, args...)
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Reply writes v with status, or err as the error JSON when err is set.
func Reply(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		WriteError(w, r, err)
		return
	}
	WriteJSON(w, status, v)
}

// WriteError writes err as the error JSON. Errors that are not *Error are
// internal: their text is logged, and the client gets a generic 500 so
// internals do not leak.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e == nil {
		slog.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		e = Errorf(http.StatusInternalServerError, "internal", "internal error; the server log has details")
	}
	ReportError(r.Context(), e)
	WriteJSON(w, e.Status, map[string]*Error{"error": e})
}

// statuses are the HTTP statuses of the domain error kinds.
var statuses = map[fail.Kind]int{
	fail.KindInvalid:       http.StatusBadRequest,
	fail.KindNotFound:      http.StatusNotFound,
	fail.KindConflict:      http.StatusConflict,
	fail.KindUnprocessable: http.StatusUnprocessableEntity,
	fail.KindUnavailable:   http.StatusServiceUnavailable,
	fail.KindTooLarge:      http.StatusRequestEntityTooLarge,
	fail.KindForbidden:     http.StatusForbidden,
}

// AsError is err as the API error a client gets: an *Error as it is, a
// domain error (shared/fail) with its kind's status and code, and nil for
// anything else, which is internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var fe *fail.Error
	if errors.As(err, &fe) {
		status, ok := statuses[fe.Kind]
		if !ok {
			return nil
		}
		code := fe.Code
		if code == "" {
			code = string(fe.Kind)
		}
		return &Error{Status: status, Code: code, Message: fe.Message, Details: fe.Details}
	}
	return nil
}

// DecodeJSON decodes exactly one JSON object from the body into v, refusing
// unknown fields, trailing data and bodies over maxBytes, with messages that
// say where the problem is.
func DecodeJSON(r *http.Request, v any, maxBytes int64) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json, got %q", ct)
	}
	return Decode(io.LimitReader(r.Body, maxBytes+1), v, maxBytes)
}

// Decode is DecodeJSON for any reader (CloudEvents data, stored manifests).
func Decode(r io.Reader, v any, maxBytes int64) error {
	body, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return BadRequest("reading body: %v", err)
	}
	if int64(len(body)) > maxBytes {
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "JSON body is larger than %d bytes", maxBytes)
	}
	return DecodeBytes(body, v)
}

// DecodeBytes strictly decodes one JSON value.
func DecodeBytes(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return BadRequest("request body is empty; a JSON object is required")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return BadRequest("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return BadRequest("field %q must be %s, got JSON %s", te.Field, te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return BadRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return BadRequest("malformed JSON: unexpected end of input")
		default:
			return BadRequest("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return BadRequest("malformed JSON: unexpected data after the object")
	}
	return nil
}

// StatusWriter records a response's status for logs and metrics. It
// forwards Hijack (WebSocket) and Flush, and Unwrap for
// http.ResponseController.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *StatusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status is the status sent (200 when the handler only wrote a body or
// nothing; 101 for an upgrade).
func (w *StatusWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Middleware wraps h with panic recovery (a panic is a 500, never a dead
// process) and one structured log line per request.
func Middleware(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &StatusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(r.Context(), "panic in handler", "method", r.Method, "path", r.URL.Path, "panic", p)
				if sw.status == 0 {
					WriteError(sw, r, fmt.Errorf("panic: %v", p))
				}
			}
			log.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "status", sw.Status(), "dur", time.Since(start))
		}()
		h.ServeHTTP(sw, r)
	})
}

// Hijack lets WebSocket upgrades and proxied upgrades through the wrapper.
func (w *StatusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Flush forwards streaming flushes.
func (w *StatusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Page is a parsed ?page=&page_size= (page counts from 1).
type Page struct {
	Page, Size int
}

// Offset is the index of the page's first item.
func (p Page) Offset() int { return (p.Page - 1) * p.Size }

// ParsePage reads ?page= (default 1) and ?page_size= (default 20, at most 100).
func ParsePage(r *http.Request) (Page, error) {
	p := Page{Page: 1, Size: 20}
	q := r.URL.Query()
	for _, f := range []struct {
		name     string
		dst      *int
		min, max int
	}{{"page", &p.Page, 1, 1 << 30}, {"page_size", &p.Size, 1, 100}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < f.min || n > f.max {
			return p, BadRequest("%s must be an integer from %d to %d; got %q", f.name, f.min, f.max, v)
		}
		*f.dst = n
	}
	return p, nil
}
