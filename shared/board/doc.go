// Package board owns the board catalog: what we know about each emulated
// machine (CPU, memory map, UARTs), the capabilities document built from what an
// installed emulator really offers, and the resolution of a user's board_config
// to one concrete machine.
package board
