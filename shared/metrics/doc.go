// Package metrics owns the platform's Prometheus metrics: one registry per
// process (the standalone server puts everything in it), the HTTP middleware
// that counts requests by route pattern, the counters and gauges the
// functions and the runner update, and the /metrics handler.
package metrics
