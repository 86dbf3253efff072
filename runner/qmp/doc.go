// Package qmp is a minimal client for the QEMU Machine Protocol: it performs
// the greeting and capabilities handshake, runs commands (matched to replies
// by id, so callers may share one Monitor), and delivers asynchronous events.
// It knows nothing about which QEMU commands exist beyond a few conveniences
// (query-status, human-monitor-command).
package qmp
