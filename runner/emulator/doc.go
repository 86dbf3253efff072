// Package emulator owns the seam between the runner and the programs that
// emulate a board: what every backend must offer (Backend: probe, launch
// paused, reap), what a launched machine offers (Machine: run control,
// typed exit, named ports, debug stub, usage), and the optional abilities a
// caller discovers by type assertion (Snapshotter, Counter). It knows no
// emulator: QEMU's flags, sockets and monitor commands live in runner/qemu,
// which implements these interfaces; emulatortest holds a fake backend for
// unit tests and the conformance suite every real backend must pass.
package emulator
