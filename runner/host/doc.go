// Package host owns what one runner pod does: it keeps the emulator of every
// session placed on it (one qemu.Process at a time per session), pumps each
// UART into the session's console ring, turns process exits into session state
// and events, registers the runner in Redis with a heartbeat, reconciles after
// a restart, and serves the internal API the functions call (start, stop,
// reset, delete, console read/write/stream). It puts every emulator into
// a cgroup with the session's CPU and memory caps (limits.go), powers off
// sessions idle past MS_IDLE_TIMEOUT, keeps paused spare emulators for fast
// power on and restore within a budget, least recently used first to go
// (spares.go), and reports its emulators to /metrics.
package host
