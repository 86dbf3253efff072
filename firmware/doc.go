// Package firmware holds the sources of the project's own bare-metal test
// firmware (C, built with arm-none-eabi-gcc by this directory's Makefile) for
// the QEMU machines netduino2, mps2-an385 and lm3s6965evb. The Go side is only
// firmware_test.go, which boots every built image in real qemu-system-arm.
package firmware
