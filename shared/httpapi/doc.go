// Package httpapi owns the HTTP conventions every component shares: the error
// JSON shape {"error":{"code","message"}}, strict JSON request decoding that
// says what is wrong, the middleware (panic recovery, request logging), the
// route table (Route: method, pattern, the scope it needs, handler; Mount),
// the mapping of domain errors (shared/fail) to statuses (AsError), and the
// Outcome an operation reports for the audit log (WriteError, Created).
package httpapi
