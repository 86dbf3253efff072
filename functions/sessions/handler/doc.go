// Package handler is the sessions function: create, list, get and delete
// sessions, load a program, power on/off/reset, and the console (history,
// input, and the WebSocket stream proxied to the session's runner). Every
// operation is reachable both as REST and as a CloudEvent. It never reads the
// environment: main builds its dependencies.
package handler
