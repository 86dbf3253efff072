// Package cmdevent owns how a function takes its requests as CloudEvents
// (binary or structured HTTP mode, through sdk-go): it dispatches each event
// type to the same operation the REST route calls, replies with the resulting
// notification event, and maps errors the way Knative expects — 400-class for
// bad input (not retried), 5xx for retryable failures.
package cmdevent
