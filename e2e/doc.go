// Package e2e holds the end-to-end tests and benchmarks: they build the real
// binaries, start the platform in both forms (standalone, and distributed:
// functions as separate HTTP servers + runner + real redis-server + real
// versitygw S3, all on loopback), and drive it over HTTP and WebSocket as a
// user would, with real QEMU running the project's test firmware.
package e2e
