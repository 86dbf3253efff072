package fwimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/machineserver/machineserver/shared/model"
)

// Info is what validation learned about an image.
type Info struct {
	Format model.Format
	Size   int64
	SHA256 string // hex
	// Entry is the ELF e_entry (Thumb bit included, as the toolchain wrote it),
	// or the HEX start address (03 CS:IP -> CS<<4+IP, 05 EIP); nil if unknown.
	Entry *uint64
	// Segments are the address ranges the image's bytes are loaded into,
	// sorted, with adjacent ranges merged. For ELF they are the PT_LOAD
	// segments at p_paddr (the load address QEMU's ELF loader uses) with size
	// p_filesz: the bytes the image carries. The zero-filled tail
	// (p_memsz-p_filesz, .bss) is RAM the startup code clears, not image
	// content, and is left out so that the ELF, HEX and BIN of one program
	// report the same ranges.
	Segments []model.Segment
	// Relocatable is true for a BIN uploaded without a load address: its one
	// segment starts at 0 and is placed at the board's flash base later.
	Relocatable bool
	Machine     string // the ELF's architecture (see Archs); "" for bin/hex
	// HasDebugInfo says the ELF has both .debug_info and .debug_line, which
	// coverage needs to map addresses to source lines.
	HasDebugInfo bool
	Symbols      int // number of function symbols (STT_FUNC), 0 for bin/hex
}

// Error is a validation failure: the image is not acceptable. Msg says what is
// wrong and what is allowed; handlers turn it into a 4xx.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func errorf(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// maxAddr is one past the last byte a 32-bit target can address.
const maxAddr = 1 << 32

// block is a run of bytes the image loads at addr.
type block struct {
	addr uint64
	data []byte
}

func (b block) end() uint64 { return b.addr + uint64(len(b.data)) }

// Parse validates data in the given format. loadAddress only applies to BIN:
// the base it will be loaded at, or nil for the board's flash base (decided
// later; Info.Relocatable is then true and the segment starts at 0).
func Parse(format model.Format, data []byte, loadAddress *uint64) (Info, error) {
	im, err := Open(format, data, loadAddress)
	return im.Info, err
}

// Image is a validated image with the bytes it loads, for reading what
// lies where (a Cortex-M vector table).
type Image struct {
	Info
	blocks []block
}

// Words returns the n little-endian 32-bit words the image loads from addr
// on, and false unless it loads every byte of them.
func (im Image) Words(addr uint64, n int) ([]uint32, bool) {
	for _, b := range im.blocks {
		if addr < b.addr || addr+uint64(4*n) > b.end() {
			continue
		}
		w := make([]uint32, n)
		for i := range w {
			w[i] = binary.LittleEndian.Uint32(b.data[addr-b.addr+uint64(4*i):])
		}
		return w, true
	}
	return nil, false
}

// Open is Parse that keeps the image's bytes.
func Open(format model.Format, data []byte, loadAddress *uint64) (Image, error) {
	if !slices.Contains(model.Formats, format) {
		return Image{}, errorf("unknown format %q: allowed values are %s", format, allowedFormats())
	}
	if len(data) == 0 {
		return Image{}, errorf("image is empty")
	}
	if loadAddress != nil && format != model.FormatBIN {
		return Image{}, errorf("load_address applies only to bin, not %s (%s images carry their own addresses)", format, format)
	}
	var (
		info   Info
		blocks []block
		err    error
	)
	switch format {
	case model.FormatELF:
		info, blocks, err = parseELF(data)
	case model.FormatHEX:
		info, blocks, err = parseHEX(data)
	default:
		info, blocks, err = parseBIN(data, loadAddress)
	}
	if err != nil {
		return Image{}, err
	}
	info.Format = format
	info.Size = int64(len(data))
	sum := sha256.Sum256(data)
	info.SHA256 = hex.EncodeToString(sum[:])
	info.Segments = make([]model.Segment, len(blocks))
	for i, b := range blocks {
		info.Segments[i] = model.Segment{Addr: b.addr, Size: uint64(len(b.data))}
	}
	return Image{Info: info, blocks: blocks}, nil
}

func parseBIN(data []byte, loadAddress *uint64) (Info, []block, error) {
	if loadAddress == nil {
		return Info{Relocatable: true}, []block{{addr: 0, data: data}}, nil
	}
	addr := *loadAddress
	if addr >= maxAddr || addr+uint64(len(data)) > maxAddr {
		return Info{}, nil, errorf("bin of %d bytes at load_address 0x%08X does not fit the 32-bit address space", len(data), addr)
	}
	return Info{}, []block{{addr: addr, data: data}}, nil
}

// ParseFormat maps the user's format string to a model.Format.
func ParseFormat(s string) (model.Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "elf":
		return model.FormatELF, nil
	case "bin":
		return model.FormatBIN, nil
	case "hex", "ihex":
		return model.FormatHEX, nil
	}
	return "", errorf("unknown format %q: allowed values are %s", s, allowedFormats())
}

func allowedFormats() string {
	names := make([]string, len(model.Formats))
	for i, f := range model.Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ") + ` ("ihex" is accepted for hex)`
}

// Detect guesses the format from the content, for uploads without a format.
// Raw binaries have no signature, so they are only accepted with an explicit
// format.
func Detect(data []byte) (model.Format, error) {
	if len(data) == 0 {
		return "", errorf("image is empty")
	}
	if bytes.HasPrefix(data, []byte("\x7fELF")) {
		return model.FormatELF, nil
	}
	if looksLikeHEX(data) {
		return model.FormatHEX, nil
	}
	return "", errorf("cannot tell the image format from its content (no ELF magic, not Intel HEX records): give format=bin for a raw binary, allowed values are %s", allowedFormats())
}

// looksLikeHEX checks that the first non-blank line is a plausible record: a
// ':' followed by at least the 10 hex digits of an empty record and nothing
// else. Full validation is Parse's job.
func looksLikeHEX(data []byte) bool {
	rest := bytes.TrimLeft(data, " \t\r\n")
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	line = bytes.TrimRight(line, " \t\r")
	if len(line) < 11 || line[0] != ':' {
		return false
	}
	return !slices.ContainsFunc(line[1:], func(c byte) bool { return !isHexDigit(c) })
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
