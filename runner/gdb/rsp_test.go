package gdb

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadPacket(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"+$qSupported:xmlRegisters=arm#f7", "$qSupported:xmlRegisters=arm#f7"},
		{"junk\x03+-$?#3f", "$?#3f"},
		{"$?#00$g#67", "$g#67"}, // bad checksum dropped
		{"$abc$?#3f", "$?#3f"},  // '$' restarts
		{"$?#zz$?#3F", "$?#3F"}, // checksum hex in either case
		{"$" + strings.Repeat("A", maxPacket+10) + "#00$?#3f", "$?#3f"}, // too long
	} {
		got, err := readPacket(bufio.NewReader(strings.NewReader(tc.in)))
		if err != nil || string(got) != tc.want {
			t.Errorf("readPacket(%.40q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := readPacket(bufio.NewReader(strings.NewReader("$qSup"))); !errors.Is(err, io.EOF) {
		t.Errorf("truncated packet: %v", err)
	}
	if got := string(errorReply("a$b#c*d}e\nf")); got != "+"+string(packet("E.a_b_c_d_e f")) {
		t.Errorf("errorReply = %q", got)
	}
}
