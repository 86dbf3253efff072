// Package audit owns the audit log: who did what to which resource with what
// result, appended to a capped Redis Stream (so every function and the
// standalone server share one log) and mirrored to the structured log.
package audit
