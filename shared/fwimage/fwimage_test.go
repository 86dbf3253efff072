package fwimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in   string
		want model.Format
	}{
		{"elf", model.FormatELF}, {"ELF", model.FormatELF}, {" Elf ", model.FormatELF},
		{"bin", model.FormatBIN}, {"BIN", model.FormatBIN},
		{"hex", model.FormatHEX}, {"Hex", model.FormatHEX}, {"ihex", model.FormatHEX}, {"IHEX", model.FormatHEX},
	}
	for _, tc := range tests {
		got, err := ParseFormat(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "srec", "elf32", "binary"} {
		_, err := ParseFormat(in)
		wantError(t, err, `unknown format "`+in+`": allowed values are elf, bin, hex ("ihex" is accepted for hex)`)
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want model.Format
	}{
		{"elf", armELF().bytes(t), model.FormatELF},
		{"truncated elf is still elf", armELF().bytes(t)[:10], model.FormatELF},
		{"hex", []byte(goodHEX), model.FormatHEX},
		{"hex crlf after blank lines", []byte("\r\n\n:00000001FF\r\n"), model.FormatHEX},
		{"hex lower case", []byte(":0400000508000049a6\n:00000001ff\n"), model.FormatHEX},
	}
	for _, tc := range tests {
		got, err := Detect(tc.data)
		if err != nil || got != tc.want {
			t.Errorf("%s: Detect = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	const unknown = `cannot tell the image format from its content (no ELF magic, not Intel HEX records): give format=bin for a raw binary, allowed values are elf, bin, hex ("ihex" is accepted for hex)`
	for name, data := range map[string][]byte{
		"raw vector table": vectors(),
		"text":             []byte("hello world\n"),
		"colon then text":  []byte(":hello world\n"),
		"short record":     []byte(":00\n"),
	} {
		_, err := Detect(data)
		if err == nil || !isValidationError(err) || err.Error() != unknown {
			t.Errorf("%s: Detect error = %v, want %q", name, err, unknown)
		}
	}
	_, err := Detect(nil)
	wantError(t, err, "image is empty")
}

func TestParseBIN(t *testing.T) {
	data := vectors()
	sum := sha256.Sum256(data)
	info, err := Parse(model.FormatBIN, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Relocatable || info.Entry != nil || info.Machine != "" || info.Format != model.FormatBIN ||
		info.Size != int64(len(data)) || info.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("info = %+v", info)
	}
	wantSegments(t, info.Segments, []model.Segment{{Addr: 0, Size: uint64(len(data))}})

	info, err = Parse(model.FormatBIN, data, u64(0x08000000))
	if err != nil {
		t.Fatal(err)
	}
	if info.Relocatable {
		t.Error("a bin with a load address is not relocatable")
	}
	wantSegments(t, info.Segments, []model.Segment{{Addr: 0x08000000, Size: uint64(len(data))}})

	// The last byte of the address space is usable, one past it is not.
	if _, err := Parse(model.FormatBIN, data, u64(1<<32-uint64(len(data)))); err != nil {
		t.Errorf("bin ending at 4 GiB: %v", err)
	}
	_, err = Parse(model.FormatBIN, data, u64(1<<32-uint64(len(data))+1))
	wantError(t, err, "bin of 12 bytes at load_address 0xFFFFFFF5 does not fit the 32-bit address space")
	_, err = Parse(model.FormatBIN, data, u64(1<<40))
	wantError(t, err, "bin of 12 bytes at load_address 0x10000000000 does not fit the 32-bit address space")
	_, err = Parse(model.FormatBIN, nil, u64(0))
	wantError(t, err, "image is empty")
}

func TestParseUnknownFormat(t *testing.T) {
	_, err := Parse("srec", []byte("S0"), nil)
	wantError(t, err, `unknown format "srec": allowed values are elf, bin, hex ("ihex" is accepted for hex)`)
}

// Handlers find the validation error behind their own wrapping.
func TestErrorUnwraps(t *testing.T) {
	_, err := Parse(model.FormatHEX, []byte(":"), nil)
	var ve *Error
	if !errors.As(errors.Join(errors.New("upload"), err), &ve) || ve.Msg == "" {
		t.Fatalf("errors.As(%v) found no *Error", err)
	}
}
