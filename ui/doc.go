// Package ui is the platform's web UI, served at /ui/ by the standalone
// server and, in a cluster, by the sessions function: sign in with an API
// key; programs, sessions with a live console (xterm.js over the console
// WebSocket), snapshots, coverage, the gdb snippet, jobs, and systems
// (their nodes, links with faults and traffic, snapshots and clock).
//
// The front end is plain JavaScript modules under src/, with the npm
// packages pinned by package-lock.json; `go run ./ui/build` (which the
// Makefile runs before building binaries) bundles them with esbuild's Go
// API into dist/, which is embedded here, so the server needs no Node.js.
// A binary built before the bundle (a fresh clone's `go build ./...`)
// answers /ui/ with a page saying how to build it.
package ui
