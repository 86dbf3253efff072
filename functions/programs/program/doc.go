// Package program holds the program use cases: store (validate and keep) a
// firmware image, list, get and delete programs, rebuild the index, and the
// object-upload trigger: bucket notifications register each new object of
// a watched bucket exactly once, or as rejected with the reason. The
// programs function's REST and CloudEvents adapters
// (functions/programs/handler) call them. It knows no transport: failures
// are domain errors (shared/fail) that each adapter maps to its own codes.
//
// Each program is stored in the blob store as its image plus a manifest
// written last; the Redis index is rebuilt from manifests by Reindex, so
// losing Redis never loses a program. Programs belong to a tenant; another
// tenant's program is answered as not found. It never reads the
// environment (WatchConfig is read by the binary that embeds it).
package program
