// Package coverage owns execution-coverage reports of firmware: it parses
// the raw counts an emulator collected (the mscov text format: executed
// blocks with their counts, and optionally the edges out of conditional
// branches), adds up counts of several runs of one program, maps them onto
// the program (files and lines through the DWARF line table, functions from
// ELF symbols, branch outcomes from the code: Thumb, RV32IMAC or AVR, by
// the ELF's machine) and writes LCOV, a JSON
// summary and a zipped HTML report. It knows nothing about QEMU: any emulator
// that can write the counts format can feed it.
//
// How much can be mapped depends on the image: an ELF with DWARF gives
// lines, functions and branches (LevelSource); with symbols but no DWARF
// only functions (LevelFunction, ErrNoDebugInfo for LCOV); a fully stripped
// ELF (ErrNoSymbols) or a BIN or HEX image (ErrAddressOnly) only block
// addresses (LevelAddress).
//
// Reports cover the program's own sources (Program.Own) unless asked for
// all files: the toolchain's and libraries' files name directories of the
// machine they were built on, where no one's genhtml can read them.
package coverage
