// Package link joins the ports of machines on one runner so several
// emulated boards run as one system. It owns the runner side of a link:
// the goroutines that carry bytes between two ports, the faults injected
// on the way (down, loss, corruption, delay; changed at run time), the
// capture of what crossed (timestamped records of both directions, bounded,
// readable as JSON-able records and as a live subscription) and the
// counters. It does not own the ports: they stay the machines' (a link is
// made over emulator.Machine.Ports() and, once closed, leaves them usable),
// and it knows nothing of systems, sessions or the API.
//
// Switch is the Ethernet side: any number of NICs joined over QEMU's
// stream-netdev framing, frames forwarded by MAC learning, the same faults
// applied per frame, a bounded capture written as pcap (WritePcap), and a
// bounded queue per port, since a switch must not let one paused node
// stall the others (see Switch).
//
// UART is a serial link between two UART ports. Every port is a byte
// stream (a QEMU chardev socket), so the link reads whatever arrives on one
// end and writes it to the other, in order, each direction on its own.
//
// # Faults act per byte
//
// Loss and Corrupt are probabilities applied to each byte on its own, not
// to each chunk the link happens to read:
//
//   - A UART has no packets. What a read returns is an artifact of the
//     host's scheduling (QEMU writes a guest's bytes one by one, and the
//     reader wakes after one or after twenty), so per-chunk faults would
//     make the same setting lose different amounts of the same traffic from
//     run to run. Per byte, the outcome depends only on the byte stream and
//     the seed: a given Options.Seed drops and flips the same bytes of the
//     same traffic every time, which is what a user debugging retry code
//     needs to reproduce a failure.
//   - It is also how a real line fails: noise and overruns lose or garble
//     single characters, and a framed message survives only if all of its
//     bytes do. With per-byte loss p, an L-byte message arrives intact with
//     probability (1-p)^L (a 10-byte frame at p=0.05: 60%); pick p with that
//     in mind.
//
// A lost byte is left out of the stream (the receiver sees the bytes
// around it joined); a corrupted byte has one bit flipped, chosen at
// random, so it always differs from what was sent. Down drops every byte
// that arrives while it is set, as a cut wire does: the sender is not held
// back. Delay holds each chunk for the delay in force when it was read and
// never reorders: a chunk is written no earlier than its due time and no
// earlier than the chunk before it. A fault change applies to bytes read
// after it; bytes already in the delay line go out as they were decided.
//
// Each direction draws from its own random source, seeded from
// Options.Seed and the direction, so the decisions in one direction do not
// depend on how the two directions' reads interleave.
//
// # Flow control
//
// Without faults the link adds no buffering of its own beyond one read:
// when a receiving machine does not take bytes (QEMU's UART holds one byte
// until the guest reads it), the link's write blocks, its read stops, and
// the sending machine's UART reports TX full, exactly as with two QEMUs
// joined by a socket chardev. With a delay, up to lineChunks chunks wait in
// the delay line before the sender is held back the same way.
package link
