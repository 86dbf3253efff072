// Package handler is the sessions function: create, list, get and delete
// sessions, load a program, power on/off/reset, and the console (history,
// input, and the WebSocket stream proxied to the session's runner). Every
// operation is reachable both as REST and as a CloudEvent. It never reads the
// environment: main builds its dependencies.
//
// Sessions and coverage reports belong to the tenant of the request that
// created them (auth.Tenant of the context); every operation looks sessions
// up through Get, which answers another tenant's session exactly like an
// unknown id. Creating a session takes one slot of the tenant's session
// quota and deleting it gives the slot back; the quota's endpoints are
// mounted with the sessions routes.
package handler
