package fwimage

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

// goodHEX is arm-none-eabi-objcopy -O ihex output for a small Cortex-M
// program: vectors, .text and .rodata, then .data stored right after them,
// and its entry as a start linear address record.
const goodHEX = `:020000040800F2
:08000000000002204900000885
:1000080030B40B4968230B4D0B4C0C486B602368CC
:1000180003F00F0391F800C050F82320624440F821
:10002800232011F8013F002BF0D1002030BC70478D
:10003800AC0000080010014000000020040000206F
:1000480008B5124A124B9A420CD2581E801A20F058
:10005800030004300F4B184453F8041B42F8041BE8
:100068008342F9D10C4A0D4B9A420BD213460C4AE3
:10007800D21A22F0030204321A44002143F8041B66
:100088009342FBD1FFF7BCFFFEE700BF0000002052
:1000980004000020C00000080400002044000020E4
:1000A8004300002068656C6C6F2066726F6D206677
:0800B80077696D6167650A00BC
:0400C0002A00000012
:0400000508000049A6
:00000001FF
`

// rec builds one record with its checksum, for cases that are easier to
// read as fields than as hex.
func rec(typ byte, addr uint16, data ...byte) string {
	b := append([]byte{byte(len(data)), byte(addr >> 8), byte(addr), typ}, data...)
	var sum byte
	for _, c := range b {
		sum += c
	}
	return fmt.Sprintf(":%X%02X\n", b, -sum)
}

func hexFile(records ...string) []byte { return []byte(strings.Join(records, "")) }

const eof = ":00000001FF\n"

func u64(v uint64) *uint64 { return &v }

func TestParseHEX(t *testing.T) {
	flash := []model.Segment{{Addr: 0x08000000, Size: 0xC4}}
	tests := []struct {
		name     string
		data     []byte
		segments []model.Segment
		entry    *uint64
		wantErr  string
	}{
		{name: "objcopy output", data: []byte(goodHEX), segments: flash, entry: u64(0x08000049)},
		{name: "crlf", data: []byte(strings.ReplaceAll(goodHEX, "\n", "\r\n")), segments: flash, entry: u64(0x08000049)},
		{name: "trailing blank lines", data: []byte(goodHEX + "\n  \r\n\t\n"), segments: flash, entry: u64(0x08000049)},
		{name: "no final newline", data: []byte(strings.TrimSuffix(goodHEX, "\n")), segments: flash, entry: u64(0x08000049)},
		{
			name:     "linear addressing 04",
			data:     hexFile(rec(0x04, 0, 0x20, 0x00), rec(0x00, 0x0010, 1, 2, 3, 4), eof),
			segments: []model.Segment{{Addr: 0x20000010, Size: 4}},
		},
		{
			name:     "segment addressing 02",
			data:     hexFile(rec(0x02, 0, 0x10, 0x00), rec(0x00, 0x0010, 1, 2, 3, 4), eof),
			segments: []model.Segment{{Addr: 0x10010, Size: 4}},
		},
		{
			name:     "start segment address 03",
			data:     hexFile(rec(0x00, 0, 1), rec(0x03, 0, 0x12, 0x34, 0x56, 0x78), eof),
			segments: []model.Segment{{Addr: 0, Size: 1}},
			entry:    u64(0x12340 + 0x5678),
		},
		{
			name:     "start linear address 05",
			data:     hexFile(rec(0x05, 0, 0x08, 0x00, 0x01, 0x01), rec(0x00, 0, 1), eof),
			segments: []model.Segment{{Addr: 0, Size: 1}},
			entry:    u64(0x08000101),
		},
		{
			name:     "repeated equal start address",
			data:     hexFile(rec(0x00, 0, 1), rec(0x05, 0, 0, 0, 0, 9), rec(0x05, 0, 0, 0, 0, 9), eof),
			segments: []model.Segment{{Addr: 0, Size: 1}},
			entry:    u64(9),
		},
		{
			name: "out of order, adjacent merged, gaps kept",
			data: hexFile(
				rec(0x00, 0x0104, 5, 6),
				rec(0x00, 0x0100, 1, 2, 3, 4),
				rec(0x00, 0x0000, 9),
				rec(0x00, 0x0106, 7), rec(0x00, 0x0000, 9), // same bytes again: fine
				rec(0x00, 0x0101, 2, 3),
				eof),
			segments: []model.Segment{{Addr: 0, Size: 1}, {Addr: 0x100, Size: 7}},
		},
		{name: "empty", data: nil, wantErr: "image is empty"},
		{
			name:    "bad checksum",
			data:    []byte(strings.Replace(goodHEX, ":1000080030B40B4968230B4D0B4C0C486B602368CC", ":1000080030B40B4968230B4D0B4C0C486B602368CD", 1)),
			wantErr: "HEX line 3: bad checksum 0xCD, the record's bytes need 0xCC",
		},
		{
			name:    "missing EOF",
			data:    []byte(strings.TrimSuffix(goodHEX, eof)),
			wantErr: "HEX has no EOF record (:00000001FF); the file is incomplete or truncated",
		},
		{
			name:    "unknown record type 06",
			data:    hexFile(rec(0x00, 0, 1), rec(0x06, 0, 1, 2), eof),
			wantErr: "HEX line 2: unknown record type 06; allowed are 00 data, 01 EOF, 02 extended segment address, 03 start segment address, 04 extended linear address, 05 start linear address",
		},
		{name: "odd hex digits", data: hexFile(":0100000001FE0\n", eof), wantErr: "HEX line 1: odd number of hex digits (13); a record is whole bytes"},
		{name: "not hex", data: hexFile(":01000000G1FE\n", eof), wantErr: `HEX line 1: 'G' at column 10 is not a hex digit`},
		{name: "no colon", data: hexFile("01000000G1FE\n", eof), wantErr: "HEX line 1: a record must start with ':'"},
		{name: "too short", data: hexFile(":0000\n", eof), wantErr: "HEX line 1: record is 2 bytes, shorter than the 5 of an empty record (count, address, type, checksum)"},
		{name: "count too big", data: hexFile(":02000000010000FD\n", eof), wantErr: "HEX line 1: byte count says 2 data bytes, the line has 3"},
		{name: "data after EOF", data: []byte(goodHEX + rec(0x00, 0, 1)), wantErr: "HEX line 18: content after the EOF record; only whitespace may follow it"},
		{name: "EOF twice", data: []byte(goodHEX + eof), wantErr: "HEX line 18: content after the EOF record; only whitespace may follow it"},
		{name: "EOF with data", data: hexFile(rec(0x00, 0, 1), rec(0x01, 0, 0)), wantErr: "HEX line 2: EOF record (type 01) must have no data, it has 1 bytes"},
		{name: "short 04", data: hexFile(rec(0x04, 0, 8), eof), wantErr: "HEX line 1: record type 04 must have 2 data bytes, it has 1"},
		{name: "short 05", data: hexFile(rec(0x05, 0, 8, 0, 0), eof), wantErr: "HEX line 1: record type 05 must have 4 data bytes, it has 3"},
		{
			name:    "conflicting start addresses",
			data:    hexFile(rec(0x00, 0, 1), rec(0x05, 0, 0, 0, 0, 9), rec(0x03, 0, 0, 0, 0, 8), eof),
			wantErr: "HEX line 3: start address 0x00000008 contradicts the earlier start address 0x00000009",
		},
		{
			name:    "overlap with different bytes",
			data:    hexFile(rec(0x00, 0x0102, 7, 8), rec(0x00, 0x0100, 1, 2, 3, 4), eof),
			wantErr: "HEX line 2: data at 0x00000102 (0x03) overlaps line 1's different data there (0x07); overlapping records must agree",
		},
		{
			name:    "past 32-bit",
			data:    hexFile(rec(0x04, 0, 0xff, 0xff), rec(0x00, 0xfff0, bytes.Repeat([]byte{1}, 32)...), eof),
			wantErr: "HEX line 2: data at 0xFFFFFFF0 with 32 bytes runs past the 32-bit address space",
		},
		{name: "only EOF", data: []byte(eof), wantErr: "HEX has nothing to load: no data records (type 00)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Parse(model.FormatHEX, tc.data, nil)
			if tc.wantErr != "" {
				wantError(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if info.Format != model.FormatHEX || info.Machine != "" || info.Symbols != 0 || info.HasDebugInfo || info.Relocatable {
				t.Errorf("info = %+v", info)
			}
			wantSegments(t, info.Segments, tc.segments)
			switch {
			case tc.entry == nil && info.Entry != nil:
				t.Errorf("entry = 0x%X, want none", *info.Entry)
			case tc.entry != nil && (info.Entry == nil || *info.Entry != *tc.entry):
				t.Errorf("entry = %v, want 0x%X", info.Entry, *tc.entry)
			}
		})
	}
}

// The merged bytes are what the records say, wherever they came from.
func TestParseHEXBytes(t *testing.T) {
	_, blocks, err := parseHEX(hexFile(rec(0x00, 0x0104, 5, 6), rec(0x00, 0x0100, 1, 2, 3, 4), rec(0x00, 0x0101, 2, 3), eof))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].addr != 0x100 || !bytes.Equal(blocks[0].data, []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("blocks = %+v", blocks)
	}
}

func TestParseHEXLoadAddress(t *testing.T) {
	_, err := Parse(model.FormatHEX, []byte(goodHEX), u64(0))
	wantError(t, err, "load_address applies only to bin, not hex (hex images carry their own addresses)")
}
