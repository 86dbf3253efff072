// Package httpapi owns the HTTP conventions every component shares: the error
// JSON shape {"error":{"code","message"}}, strict JSON request decoding that
// says what is wrong, and the middleware (panic recovery, request logging).
package httpapi
