// Package handler is the snapshots function's transport: the REST routes
// (each declared with the scope it needs) and the snapshot command
// CloudEvents, over the use cases of functions/snapshots/snapshot. Every
// operation is reachable both as REST and as a CloudEvent. It never reads
// the environment: main builds its dependencies.
package handler
