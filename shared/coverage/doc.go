// Package coverage owns execution-coverage reports of firmware: it parses
// the raw counts an emulator collected (the mscov text format: executed
// blocks with their counts, and optionally the edges out of conditional
// branches), adds up counts of several runs of one program, maps them onto
// the program (files and lines through the DWARF line table, functions from
// ELF symbols, branch outcomes from the Thumb code) and writes LCOV, a JSON
// summary and a zipped HTML report. It knows nothing about QEMU: any emulator
// that can write the counts format can feed it.
//
// How much can be mapped depends on the image: an ELF with DWARF gives
// lines, functions and branches (LevelSource); without DWARF only functions
// (LevelFunction, ErrNoDebugInfo for LCOV); a BIN or HEX image only block
// addresses (LevelAddress, ErrAddressOnly).
package coverage
