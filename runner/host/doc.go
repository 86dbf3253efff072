// Package host owns what one runner pod does: it keeps the machine of every
// session placed on it (one emulator.Machine at a time per session, launched
// through the emulator.Backend it is given: QEMU in production, a fake in
// unit tests), pumps every UART of the machine into its own console ring
// (console.go), turns machine exits into session state and events
// (exit.go), registers the runner in Redis with a heartbeat and reconciles
// after a restart (registry.go), fetches and verifies artifacts (cache.go)
// and serves the internal API the functions call (start, stop, reset,
// delete, console read/write/stream per port; api.go). Power on, off, reset
// and delete are in lifecycle.go. It puts every emulator into a cgroup with
// the session's CPU and memory caps (limits.go), powers off sessions idle
// past MS_IDLE_TIMEOUT, keeps paused spare machines for fast power on and
// restore within a budget, least recently used first to go (spares.go), and
// reports its emulators to /metrics.
package host
