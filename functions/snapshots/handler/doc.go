// Package handler is the snapshots function: capture a running session's
// machine state into the blob store (state plus manifest, indexed in Redis
// and rebuilt from manifests), list, get and delete snapshots, restore one
// into a session, and fork one into new sessions. The capture and the
// restore happen on the runners (which also write the manifest it hands
// them, beside the state); this package decides and records. Snapshots
// belong to the tenant that took them: another tenant's are answered like
// unknown ids. Every operation is reachable as REST and as a CloudEvent. It
// never reads the environment.
package handler
