// Package fwimage owns firmware image validation: it decides whether an
// uploaded ELF, Intel HEX or raw binary is something we can load into a 32-bit
// ARM machine, and reports what it learned (entry point, the address ranges the
// image loads into, debug info). It knows nothing about boards: whether the
// ranges fit a machine's memory is the board package's question.
package fwimage
