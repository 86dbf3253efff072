package httpapi

import (
	"context"
	"net/http"
)

// Outcome is what an operation reports about itself to the middleware that
// audits its request, so the audit log takes the result from the operation
// rather than from parsing the response it wrote.
type Outcome struct {
	// Err is the error the client was answered with: the *Error itself, or
	// for an internal error the generic 500 the client saw.
	Err *Error
	// Created is the id of the resource a create made, for routes whose
	// path names no id.
	Created string
}

type outcomeKey struct{}

// WithOutcome returns ctx carrying a fresh Outcome for the request's
// operation to fill (WriteError, Created, ReportError).
func WithOutcome(ctx context.Context) (context.Context, *Outcome) {
	o := &Outcome{}
	return context.WithValue(ctx, outcomeKey{}, o), o
}

// ReportError records e as the request's error, when the request is
// audited. WriteError calls it; a proxy calls it with the error its
// upstream answered.
func ReportError(ctx context.Context, e *Error) {
	if o, ok := ctx.Value(outcomeKey{}).(*Outcome); ok {
		o.Err = e
	}
}

// Created answers a create: v with 201, recording id as the created
// resource, or err as the error JSON.
func Created(w http.ResponseWriter, r *http.Request, id string, v any, err error) {
	if o, ok := r.Context().Value(outcomeKey{}).(*Outcome); ok && err == nil {
		o.Created = id
	}
	Reply(w, r, http.StatusCreated, v, err)
}
