// Package snapshot holds the snapshot use cases: capture a running
// session's machine state into the blob store (state plus manifest, indexed
// in Redis and rebuilt from manifests), list, get and delete snapshots,
// restore one into a session, and fork one into new sessions. The capture
// and the restore happen on the runners (which also write the manifest it
// hands them, beside the state); this package decides and records. The
// snapshots function's REST and CloudEvents adapters
// (functions/snapshots/handler) call them. It knows no transport: failures
// are domain errors (shared/fail) that each adapter maps to its own codes.
//
// Snapshots belong to the tenant that took them: another tenant's are
// answered like unknown ids.
package snapshot
