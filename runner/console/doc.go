// Package console owns a session's UART history: a bounded ring addressed by
// absolute byte offsets, so HTTP readers and WebSocket streamers can resume
// from where they stopped without loss or duplication, and can tell when the
// ring has overwritten what they had not read yet.
package console
