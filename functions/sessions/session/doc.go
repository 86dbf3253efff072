// Package session holds the session use cases: create, list, get and delete
// sessions, load a program, power on/off/reset, debugger info, coverage
// (start, stop, live counts, stored and merged reports), recordings and
// their replays, and systems of linked boards (nodes that are sessions on
// one runner, powered on as one, their links observed and faulted). The sessions
// function's REST and CloudEvents adapters (functions/sessions/handler) call
// them, and so do the functions that drive sessions (jobs, snapshots). It
// knows no transport: failures are domain errors (shared/fail) that each
// adapter maps to its own codes, or a runner's API errors, passed on with
// their status (about names the node or link one is about).
//
// Sessions and coverage reports belong to the tenant of the request that
// created them (auth.Tenant of the context); every operation looks sessions
// up through Get, which answers another tenant's session exactly like an
// unknown id. Creating a session takes one slot of the tenant's session
// quota and deleting it gives the slot back.
package session
