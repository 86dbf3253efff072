package fwimage

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"os"
	"runtime"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

// prog is one program header of a hand-built ELF; memsz 0 means len(data).
type prog struct {
	typ          elf.ProgType
	vaddr, paddr uint64
	memsz        uint64
	data         []byte
}

// elfFixture is a hand-built ELF: header, program headers, then each
// segment's bytes in order. No sections.
type elfFixture struct {
	class   elf.Class
	order   binary.ByteOrder
	machine elf.Machine
	typ     elf.Type
	entry   uint64
	progs   []prog
}

// armELF is a minimal valid Cortex-M executable: a vector table in flash.
func armELF(progs ...prog) elfFixture {
	if progs == nil {
		progs = []prog{{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()}}
	}
	return elfFixture{class: elf.ELFCLASS32, order: binary.LittleEndian, machine: elf.EM_ARM, typ: elf.ET_EXEC, entry: 0x08000009, progs: progs}
}

func vectors() []byte {
	return []byte{0x00, 0x00, 0x02, 0x20, 0x09, 0x00, 0x00, 0x08, 0xfe, 0xe7, 0x00, 0xbf}
}

func (e elfFixture) bytes(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := func(v any) {
		if err := binary.Write(&buf, e.order, v); err != nil {
			t.Fatal(err)
		}
	}
	data := elf.ELFDATA2LSB
	if e.order == binary.BigEndian {
		data = elf.ELFDATA2MSB
	}
	var ident [elf.EI_NIDENT]byte
	copy(ident[:], elf.ELFMAG)
	ident[elf.EI_CLASS] = byte(e.class)
	ident[elf.EI_DATA] = byte(data)
	ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)

	n := len(e.progs)
	memsz := func(p prog) uint64 {
		if p.memsz == 0 {
			return uint64(len(p.data))
		}
		return p.memsz
	}
	if e.class == elf.ELFCLASS64 {
		off := uint64(64 + 56*n)
		w(elf.Header64{Ident: ident, Type: uint16(e.typ), Machine: uint16(e.machine), Version: 1, Entry: e.entry,
			Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: uint16(n), Shentsize: 64})
		for _, p := range e.progs {
			w(elf.Prog64{Type: uint32(p.typ), Off: off, Vaddr: p.vaddr, Paddr: p.paddr,
				Filesz: uint64(len(p.data)), Memsz: memsz(p), Flags: uint32(elf.PF_R | elf.PF_X), Align: 4})
			off += uint64(len(p.data))
		}
	} else {
		off := uint32(52 + 32*n)
		w(elf.Header32{Ident: ident, Type: uint16(e.typ), Machine: uint16(e.machine), Version: 1, Entry: uint32(e.entry),
			Phoff: 52, Flags: 0x05000200, Ehsize: 52, Phentsize: 32, Phnum: uint16(n), Shentsize: 40})
		for _, p := range e.progs {
			w(elf.Prog32{Type: uint32(p.typ), Off: off, Vaddr: uint32(p.vaddr), Paddr: uint32(p.paddr),
				Filesz: uint32(len(p.data)), Memsz: uint32(memsz(p)), Flags: uint32(elf.PF_R | elf.PF_X), Align: 4})
			off += uint32(len(p.data))
		}
	}
	for _, p := range e.progs {
		buf.Write(p.data)
	}
	return buf.Bytes()
}

func TestParseELF(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	aarch64 := armELF()
	aarch64.class, aarch64.machine = elf.ELFCLASS64, elf.EM_AARCH64
	arm64class := armELF()
	arm64class.class = elf.ELFCLASS64
	bigEndian := armELF()
	bigEndian.order = binary.BigEndian
	rel := armELF()
	rel.typ = elf.ET_REL
	dyn := armELF()
	dyn.typ = elf.ET_DYN
	riscv := armELF()
	riscv.class, riscv.machine = elf.ELFCLASS64, elf.EM_RISCV
	ram := bytes.Repeat([]byte{0xaa}, 8)

	tests := []struct {
		name     string
		data     []byte
		segments []model.Segment
		wantErr  string
		machine  string
	}{
		{name: "minimal arm", data: armELF().bytes(t), segments: []model.Segment{{Addr: 0x08000000, Size: 12}}},
		{name: "rv32", data: withMachine(armELF(), elf.EM_RISCV).bytes(t), segments: []model.Segment{{Addr: 0x08000000, Size: 12}}, machine: "riscv32"},
		{name: "avr", data: withMachine(armELF(), elf.EM_AVR).bytes(t), segments: []model.Segment{{Addr: 0x08000000, Size: 12}}, machine: "avr"},
		{
			// .data is linked for RAM (vaddr) but stored in flash (paddr)
			// right after .text: the ranges are LMAs and merge; the .bss
			// tail (memsz > filesz) and a .bss-only segment are not image
			// content.
			name: "lma not vma, bss left out",
			data: armELF(
				prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x0800000c, memsz: 0x40, data: ram},
				prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()},
				prog{typ: elf.PT_LOAD, vaddr: 0x20000100, paddr: 0x20000100, memsz: 0x100},
				prog{typ: elf.PT_NOTE, data: []byte("note")},
			).bytes(t),
			segments: []model.Segment{{Addr: 0x08000000, Size: 20}},
		},
		{
			name: "separate ranges sorted",
			data: armELF(
				prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x20000000, data: ram},
				prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()},
			).bytes(t),
			segments: []model.Segment{{Addr: 0x08000000, Size: 12}, {Addr: 0x20000000, Size: 8}},
		},
		{name: "host executable", data: host, wantErr: "ELF is for " + hostMachine(t) + "; accepted are " + accepted},
		{name: "aarch64", data: aarch64.bytes(t), wantErr: "ELF is for 64-bit ARM (AArch64); accepted are " + accepted},
		{name: "riscv64", data: riscv.bytes(t), wantErr: "ELF is ELFCLASS64; only 32-bit ELF (ELFCLASS32) is accepted: " + accepted},
		{name: "arm but ELFCLASS64", data: arm64class.bytes(t), wantErr: "ELF is ELFCLASS64; only 32-bit ELF (ELFCLASS32) is accepted: " + accepted},
		{name: "big-endian", data: bigEndian.bytes(t), wantErr: "ELF is big-endian (ELFDATA2MSB); only little-endian ELF (ELFDATA2LSB) is accepted: " + accepted},
		{name: "relocatable object", data: rel.bytes(t), wantErr: "ELF is a relocatable object (ET_REL, e.g. an unlinked .o); a linked executable (ET_EXEC) is needed"},
		{name: "shared object", data: dyn.bytes(t), wantErr: "ELF is a shared object or position-independent executable (ET_DYN); a linked executable (ET_EXEC) is needed"},
		{name: "no program headers", data: armELF([]prog{}...).bytes(t), wantErr: "ELF has nothing to load: no PT_LOAD segment with file content (p_filesz > 0)"},
		{
			name:    "no PT_LOAD",
			data:    armELF(prog{typ: elf.PT_NOTE, data: []byte("note")}).bytes(t),
			wantErr: "ELF has nothing to load: no PT_LOAD segment with file content (p_filesz > 0)",
		},
		{
			name:    "only bss",
			data:    armELF(prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x20000000, memsz: 0x100}).bytes(t),
			wantErr: "ELF has nothing to load: no PT_LOAD segment with file content (p_filesz > 0)",
		},
		{
			name:    "past 32-bit",
			data:    armELF(prog{typ: elf.PT_LOAD, vaddr: 0xffffff00, paddr: 0xffffff00, memsz: 0x200, data: vectors()}).bytes(t),
			wantErr: "ELF PT_LOAD segment 0 at 0xFFFFFF00 with size 0x200 runs past the 32-bit address space",
		},
		{
			name: "overlapping segments",
			data: armELF(
				prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()},
				prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x08000008, data: ram},
			).bytes(t),
			wantErr: "ELF PT_LOAD segments overlap at load address 0x08000008: 0x08000000-0x0800000C and 0x08000008-0x08000010",
		},
		{
			name:    "filesz larger than memsz",
			data:    armELF(prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, memsz: 4, data: vectors()}).bytes(t),
			wantErr: "ELF program header 0 is malformed: p_filesz 0xC is larger than p_memsz 0x4",
		},
		{name: "not elf", data: []byte("MZ this is not an ELF"), wantErr: `not an ELF file: it does not start with the ELF magic \x7fELF`},
		{name: "empty", data: nil, wantErr: "image is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Parse(model.FormatELF, tc.data, nil)
			if tc.wantErr != "" {
				wantError(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if info.Format != model.FormatELF || info.Machine != cmp.Or(tc.machine, "arm") || info.Size != int64(len(tc.data)) {
				t.Errorf("info = %+v", info)
			}
			if info.Entry == nil || *info.Entry != 0x08000009 {
				t.Errorf("entry = %v, want 0x08000009", info.Entry)
			}
			if info.HasDebugInfo || info.Symbols != 0 || info.Relocatable {
				t.Errorf("a section-less ELF has no debug info or symbols and is not relocatable: %+v", info)
			}
			wantSegments(t, info.Segments, tc.segments)
		})
	}
}

// Every prefix of a valid ELF is refused with an *Error that says it is
// truncated or malformed, never a panic.
func TestParseELFTruncated(t *testing.T) {
	full := armELF(
		prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()},
		prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x0800000c, data: bytes.Repeat([]byte{1}, 8)},
	).bytes(t)
	for n := 1; n < len(full); n++ {
		_, err := Parse(model.FormatELF, full[:n], nil)
		if err == nil {
			t.Fatalf("%d of %d bytes: accepted", n, len(full))
		}
		if !isValidationError(err) || !containsAny(err.Error(), "truncated", "malformed") {
			t.Fatalf("%d of %d bytes: %v, want an *Error about truncation", n, len(full), err)
		}
	}
	// Cut inside the last segment's bytes: the headers still parse.
	wantError(t, parseErr(model.FormatELF, full[:len(full)-1]),
		"ELF is truncated: PT_LOAD segment 1 needs file bytes up to offset 0x88, the file has 135 bytes")
	wantError(t, parseErr(model.FormatELF, full[:20]), "ELF is truncated: 20 bytes, shorter than the 52-byte ELF header")
}

func TestParseELFLoadAddress(t *testing.T) {
	addr := uint64(0x08000000)
	_, err := Parse(model.FormatELF, armELF().bytes(t), &addr)
	wantError(t, err, "load_address applies only to bin, not elf (elf images carry their own addresses)")
}

func withMachine(e elfFixture, m elf.Machine) elfFixture {
	e.machine = m
	return e
}

// hostMachine is how the error names the machine the test binary is built for.
func hostMachine(t *testing.T) string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "64-bit ARM (AArch64)"
	}
	t.Fatalf("no expected machine name for GOARCH %s", runtime.GOARCH)
	return ""
}
