// Package runnerapi owns the internal HTTP API between the functions and the
// runners: the request and response types, and the client the functions use.
// Every call carries the shared runner token. Errors come back in the common
// error JSON and are returned as *httpapi.Error with the runner's status, so a
// function can pass a runner's 409 straight through.
package runnerapi
