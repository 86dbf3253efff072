// Package qemu supervises one qemu-system-arm process: it validates the
// configuration before exec, starts QEMU paused in its own process group with
// QMP and the first UART on unix sockets, connects to both before the guest
// runs (so no early output is lost), detects exit, and stops it with a grace
// period, then a signal, then a kill of the whole group. It also probes an
// installed binary for what it offers.
package qemu
