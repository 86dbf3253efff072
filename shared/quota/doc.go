// Package quota owns per-tenant limits and their enforcement: how many
// sessions a tenant may hold at once, how many bytes of programs and
// snapshots it may store, and how many of its jobs may run at once.
//
// Limits come from configuration (Config, read with envconfig by the mains)
// and may be overridden per tenant in Redis through the admin endpoints.
// Holdings are kept in Redis as one hash per tenant and kind, member (the
// resource id) to amount, and every acquire is one Lua script that counts,
// compares with the limit and records the member atomically, so concurrent
// requests on any number of function instances never both take the last
// slot. Because holdings are keyed by resource id, acquire and release are
// idempotent: a retried create, a double delete or a replayed event cannot
// make the count drift, and Reconcile repairs what a crash left behind.
//
// How the functions use it (q is a *Quota; nil means unlimited, every
// method is safe on nil):
//
//	sessions: q.Acquire(ctx, tenant, quota.Sessions, sessionID, 1) before storing the session,
//	          q.Release(ctx, tenant, quota.Sessions, sessionID) after deleting it (or when storing fails).
//	storage:  q.Acquire(ctx, tenant, quota.Storage, quota.ProgramKey(id), size) before writing a program,
//	          q.Acquire(ctx, tenant, quota.Storage, quota.SnapshotKey(id), size) before (or, when the size
//	          is only known after streaming, right after) writing a snapshot,
//	          q.Release with the same key on delete and when the write fails.
//	jobs:     q.Acquire(ctx, tenant, quota.Jobs, jobID, 1) when a job starts running,
//	          q.Release(ctx, tenant, quota.Jobs, jobID) when it ends, however it ends.
//	at start: q.Reconcile (sessions, jobs) or q.ReconcileScope with prefix ProgramKey("") or
//	          SnapshotKey("") (storage: programs and snapshots share the kind) from the recounted state.
//
// Acquire's refusal is an *ExceededError: errors.Is(err, ErrExceeded) holds,
// and errors.As gives an *httpapi.Error (429 for sessions and jobs, 403 for
// storage) whose message says which limit, the usage and what to do.
package quota
