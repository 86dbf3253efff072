package fwimage

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// Intel HEX record types.
const (
	recData         = 0x00
	recEOF          = 0x01
	recExtSegment   = 0x02
	recStartSegment = 0x03
	recExtLinear    = 0x04
	recStartLinear  = 0x05
)

// chunk is one data record's bytes, with its line for error messages.
type chunk struct {
	block
	line int
}

// parseHEX validates an Intel HEX file. Addresses are base+offset with the base
// from the last 02 (segment<<4) or 04 (upper 16 bits) record; a record that
// crosses a 64 KiB boundary continues linearly rather than wrapping, which is
// what objcopy and QEMU's loader do for 04 and what no real 02 file relies on.
func parseHEX(data []byte) (Info, []block, error) {
	var (
		chunks []chunk
		base   uint64
		entry  *uint64
		eof    bool
	)
	for i, raw := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		line := bytes.TrimRight(raw, " \t\r")
		if len(bytes.TrimLeft(line, " \t")) == 0 {
			continue
		}
		if eof {
			return Info{}, nil, errorf("HEX line %d: content after the EOF record; only whitespace may follow it", n)
		}
		rec, err := decodeRecord(n, line)
		if err != nil {
			return Info{}, nil, err
		}
		offset := uint64(binary.BigEndian.Uint16(rec[1:3]))
		typ, payload := rec[3], rec[4:len(rec)-1]
		switch typ {
		case recData:
			addr := base + offset
			if addr+uint64(len(payload)) > maxAddr {
				return Info{}, nil, errorf("HEX line %d: data at 0x%08X with %d bytes runs past the 32-bit address space", n, addr, len(payload))
			}
			if len(payload) > 0 {
				chunks = append(chunks, chunk{block{addr: addr, data: payload}, n})
			}
		case recEOF:
			if len(payload) != 0 {
				return Info{}, nil, errorf("HEX line %d: EOF record (type 01) must have no data, it has %d bytes", n, len(payload))
			}
			eof = true
		case recExtSegment, recExtLinear:
			if len(payload) != 2 {
				return Info{}, nil, errorf("HEX line %d: record type %02X must have 2 data bytes, it has %d", n, typ, len(payload))
			}
			shift := 4
			if typ == recExtLinear {
				shift = 16
			}
			base = uint64(binary.BigEndian.Uint16(payload)) << shift
		case recStartSegment, recStartLinear:
			if len(payload) != 4 {
				return Info{}, nil, errorf("HEX line %d: record type %02X must have 4 data bytes, it has %d", n, typ, len(payload))
			}
			start := uint64(binary.BigEndian.Uint32(payload))
			if typ == recStartSegment {
				cs, ip := uint64(binary.BigEndian.Uint16(payload[0:2])), uint64(binary.BigEndian.Uint16(payload[2:4]))
				start = cs<<4 + ip
			}
			if entry != nil && *entry != start {
				return Info{}, nil, errorf("HEX line %d: start address 0x%08X contradicts the earlier start address 0x%08X", n, start, *entry)
			}
			entry = &start
		default:
			return Info{}, nil, errorf("HEX line %d: unknown record type %02X; allowed are 00 data, 01 EOF, 02 extended segment address, 03 start segment address, 04 extended linear address, 05 start linear address", n, typ)
		}
	}
	if !eof {
		return Info{}, nil, errorf("HEX has no EOF record (:00000001FF); the file is incomplete or truncated")
	}
	if len(chunks) == 0 {
		return Info{}, nil, errorf("HEX has nothing to load: no data records (type 00)")
	}
	blocks, err := mergeChunks(chunks)
	if err != nil {
		return Info{}, nil, err
	}
	return Info{Entry: entry}, blocks, nil
}

// decodeRecord checks one line's syntax, length and checksum and returns its
// bytes: count, address (2), type, data, checksum.
func decodeRecord(n int, line []byte) ([]byte, error) {
	if line[0] != ':' {
		return nil, errorf("HEX line %d: a record must start with ':'", n)
	}
	digits := line[1:]
	for col, c := range digits {
		if !isHexDigit(c) {
			return nil, errorf("HEX line %d: %q at column %d is not a hex digit", n, c, col+2)
		}
	}
	if len(digits)%2 != 0 {
		return nil, errorf("HEX line %d: odd number of hex digits (%d); a record is whole bytes", n, len(digits))
	}
	rec := make([]byte, len(digits)/2)
	for j := range rec {
		rec[j] = unhex(digits[2*j])<<4 | unhex(digits[2*j+1])
	}
	if len(rec) < 5 {
		return nil, errorf("HEX line %d: record is %d bytes, shorter than the 5 of an empty record (count, address, type, checksum)", n, len(rec))
	}
	if want := 5 + int(rec[0]); len(rec) != want {
		return nil, errorf("HEX line %d: byte count says %d data bytes, the line has %d", n, rec[0], len(rec)-5)
	}
	var sum byte
	for _, b := range rec[:len(rec)-1] {
		sum += b
	}
	if want := -sum; rec[len(rec)-1] != want {
		return nil, errorf("HEX line %d: bad checksum 0x%02X, the record's bytes need 0x%02X", n, rec[len(rec)-1], want)
	}
	return rec, nil
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// mergeChunks joins the data records into sorted runs. Records may repeat
// bytes already written (some tools emit overlapping records) but not change
// them: the image would mean different things depending on load order.
func mergeChunks(chunks []chunk) ([]block, error) {
	sorted := slices.Clone(chunks)
	slices.SortStableFunc(sorted, func(a, b chunk) int { return compareAddr(a.addr, b.addr) })
	var merged []block
	for _, c := range sorted {
		if len(merged) == 0 || c.addr > merged[len(merged)-1].end() {
			merged = append(merged, block{addr: c.addr, data: slices.Clone(c.data)})
			continue
		}
		last := &merged[len(merged)-1]
		overlap := min(last.end()-c.addr, uint64(len(c.data)))
		old := last.data[c.addr-last.addr:][:overlap]
		for k := range old {
			if old[k] != c.data[k] {
				return nil, conflictError(chunks, c.addr+uint64(k))
			}
		}
		last.data = append(last.data, c.data[overlap:]...)
	}
	return merged, nil
}

// conflictError names, in file order, the first record that wrote addr and
// the first later one that wrote a different byte there.
func conflictError(chunks []chunk, addr uint64) error {
	var first *chunk
	for i := range chunks {
		c := &chunks[i]
		if addr < c.addr || addr >= c.end() {
			continue
		}
		v := c.data[addr-c.addr]
		if first == nil {
			first = c
			continue
		}
		if old := first.data[addr-first.addr]; v != old {
			return errorf("HEX line %d: data at 0x%08X (0x%02X) overlaps line %d's different data there (0x%02X); overlapping records must agree",
				c.line, addr, v, first.line, old)
		}
	}
	return errorf("HEX: conflicting data at 0x%08X", addr) // unreachable: mergeChunks saw two values
}
