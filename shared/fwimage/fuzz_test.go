package fwimage

import (
	"debug/elf"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

// checkParse is what every fuzz target asserts besides "no panic": failures
// are *Error, and accepted images describe sane, merged, 32-bit ranges.
func checkParse(t *testing.T, format model.Format, data []byte, loadAddress *uint64) {
	info, err := Parse(format, data, loadAddress)
	if err != nil {
		if !isValidationError(err) {
			t.Fatalf("error %v (%T) is not an *Error", err, err)
		}
		return
	}
	if len(info.Segments) == 0 {
		t.Fatalf("accepted with no segments: %+v", info)
	}
	var prevEnd uint64
	for i, s := range info.Segments {
		if s.Size == 0 || s.Addr+s.Size > maxAddr {
			t.Fatalf("segment %d = %+v is empty or past 32 bits", i, s)
		}
		if i > 0 && s.Addr <= prevEnd {
			t.Fatalf("segments not sorted and merged: %s", fmtSegments(info.Segments))
		}
		prevEnd = s.Addr + s.Size
	}
}

func FuzzParseELF(f *testing.F) {
	f.Add(armELF().bytes(f))
	f.Add(armELF(
		prog{typ: elf.PT_LOAD, vaddr: 0x20000000, paddr: 0x0800000c, memsz: 0x40, data: []byte{1, 2, 3, 4}},
		prog{typ: elf.PT_LOAD, vaddr: 0x08000000, paddr: 0x08000000, data: vectors()},
		prog{typ: elf.PT_NOTE, data: []byte("note")},
	).bytes(f))
	f.Add(armELF().bytes(f)[:60])
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, model.FormatELF, data, nil)
	})
}

func FuzzParseHEX(f *testing.F) {
	f.Add([]byte(goodHEX))
	f.Add(hexFile(rec(0x02, 0, 0x10, 0x00), rec(0x00, 0x0010, 1, 2, 3, 4), rec(0x03, 0, 0x12, 0x34, 0x56, 0x78), eof))
	f.Add(hexFile(rec(0x00, 0x0104, 5, 6), rec(0x00, 0x0100, 1, 2, 3, 4), rec(0x00, 0x0101, 2, 3), eof))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, model.FormatHEX, data, nil)
	})
}

func FuzzParseBIN(f *testing.F) {
	f.Add(vectors(), uint64(0x08000000), true)
	f.Add(vectors(), uint64(0), false)
	f.Add([]byte{1}, uint64(1<<32-1), true)
	f.Fuzz(func(t *testing.T, data []byte, addr uint64, hasAddr bool) {
		var loadAddress *uint64
		if hasAddr {
			loadAddress = &addr
		}
		checkParse(t, model.FormatBIN, data, loadAddress)
	})
}
