// Package handler is the sessions function's transport: the REST routes
// (each declared with the scope it needs), the console (history, input, and
// the WebSocket stream proxied to the session's runner) and the session
// command CloudEvents, over the use cases of functions/sessions/session.
// Every operation is reachable both as REST and as a CloudEvent. It never
// reads the environment: main builds its dependencies. The quota's
// endpoints are mounted with the sessions routes.
package handler
