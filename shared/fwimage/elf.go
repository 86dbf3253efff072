package fwimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// elfHeader32Size is the size of an ELF32 file header: anything shorter cannot
// be an executable.
const elfHeader32Size = 52

// Archs are the ELF machines the platform's emulator boards run, with the
// architecture name boards carry (board.Board.Arch): exactly the
// architectures of the QEMU backend's catalog.
var Archs = map[elf.Machine]string{elf.EM_ARM: "arm", elf.EM_RISCV: "riscv32", elf.EM_AVR: "avr"}

// accepted says which ELF files are accepted, for error messages.
const accepted = "32-bit little-endian ARM (EM_ARM, Cortex-M boards), RISC-V RV32 (EM_RISCV, sifive_e) and AVR (EM_AVR, Arduino boards) executables"

func parseELF(data []byte) (Info, []block, error) {
	magic := []byte(elf.ELFMAG)
	if !bytes.HasPrefix(data, magic) && !bytes.HasPrefix(magic, data) {
		return Info{}, nil, errorf("not an ELF file: it does not start with the ELF magic \\x7fELF")
	}
	if len(data) < elfHeader32Size {
		return Info{}, nil, errorf("ELF is truncated: %d bytes, shorter than the %d-byte ELF header", len(data), elfHeader32Size)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return Info{}, nil, errorf("ELF is malformed or truncated: %v", err)
	}
	arch, ok := Archs[f.Machine]
	if !ok {
		return Info{}, nil, errorf("ELF is for %s; accepted are %s", machineName(f.Machine), accepted)
	}
	if f.Class != elf.ELFCLASS32 {
		return Info{}, nil, errorf("ELF is %s; only 32-bit ELF (ELFCLASS32) is accepted: %s", f.Class, accepted)
	}
	if f.Data != elf.ELFDATA2LSB {
		return Info{}, nil, errorf("ELF is big-endian (%s); only little-endian ELF (ELFDATA2LSB) is accepted: %s", f.Data, accepted)
	}
	if f.Type != elf.ET_EXEC {
		return Info{}, nil, errorf("ELF is a %s; a linked executable (ET_EXEC) is needed", typeName(f.Type))
	}

	var blocks []block
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Filesz > p.Memsz {
			return Info{}, nil, errorf("ELF program header %d is malformed: p_filesz 0x%X is larger than p_memsz 0x%X", i, p.Filesz, p.Memsz)
		}
		if p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			return Info{}, nil, errorf("ELF is truncated: PT_LOAD segment %d needs file bytes up to offset 0x%X, the file has %d bytes", i, p.Off+p.Filesz, len(data))
		}
		if p.Paddr+p.Memsz > maxAddr {
			return Info{}, nil, errorf("ELF PT_LOAD segment %d at 0x%08X with size 0x%X runs past the 32-bit address space", i, p.Paddr, p.Memsz)
		}
		if p.Filesz == 0 {
			continue // .bss only: nothing from the image is loaded
		}
		blocks = append(blocks, block{addr: p.Paddr, data: data[p.Off : p.Off+p.Filesz]})
	}
	if len(blocks) == 0 {
		return Info{}, nil, errorf("ELF has nothing to load: no PT_LOAD segment with file content (p_filesz > 0)")
	}
	blocks, err = mergeELFBlocks(blocks)
	if err != nil {
		return Info{}, nil, err
	}

	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return Info{}, nil, errorf("ELF symbol table is malformed: %v", err)
	}
	funcs := 0
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			funcs++
		}
	}
	entry := f.Entry
	return Info{
		Entry:        &entry,
		Machine:      arch,
		HasDebugInfo: hasContent(f, ".debug_info") && hasContent(f, ".debug_line"),
		Symbols:      funcs,
	}, blocks, nil
}

// mergeELFBlocks sorts the segments and joins adjacent ones. Overlapping load
// addresses are refused: QEMU refuses them too ("rom: requested regions
// overlap"), so such an image could never start.
func mergeELFBlocks(blocks []block) ([]block, error) {
	slices.SortStableFunc(blocks, func(a, b block) int { return compareAddr(a.addr, b.addr) })
	merged := []block{blocks[0]}
	for _, b := range blocks[1:] {
		last := &merged[len(merged)-1]
		switch {
		case b.addr < last.end():
			return nil, errorf("ELF PT_LOAD segments overlap at load address 0x%08X: 0x%08X-0x%08X and 0x%08X-0x%08X",
				b.addr, last.addr, last.end(), b.addr, b.end())
		case b.addr == last.end():
			// Concat copies: last.data aliases the caller's image.
			last.data = slices.Concat(last.data, b.data)
		default:
			merged = append(merged, b)
		}
	}
	return merged, nil
}

func compareAddr(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func hasContent(f *elf.File, name string) bool {
	s := f.Section(name)
	return s != nil && s.Type != elf.SHT_NOBITS && s.Size > 0
}

// machineName says which architecture an ELF is for in the words users know.
func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_386:
		return "x86 (i386)"
	case elf.EM_AARCH64:
		return "64-bit ARM (AArch64)"
	case elf.EM_RISCV:
		return "RISC-V"
	case elf.EM_XTENSA:
		return "Xtensa"
	case elf.EM_AVR:
		return "AVR"
	case elf.EM_MIPS:
		return "MIPS"
	case elf.EM_PPC:
		return "PowerPC"
	case elf.EM_PPC64:
		return "64-bit PowerPC"
	case elf.EM_NONE:
		return "no machine (EM_NONE)"
	}
	return strings.TrimPrefix(m.String(), "EM_")
}

func typeName(t elf.Type) string {
	switch t {
	case elf.ET_REL:
		return "relocatable object (ET_REL, e.g. an unlinked .o)"
	case elf.ET_DYN:
		return "shared object or position-independent executable (ET_DYN)"
	case elf.ET_CORE:
		return "core dump (ET_CORE)"
	}
	return fmt.Sprintf("file of type %s", t)
}
