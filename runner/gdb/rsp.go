package gdb

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

const (
	// maxPacket bounds what the proxy buffers while looking for a client's
	// first packet; gdb's largest opening packet (qSupported) is ~200 bytes.
	maxPacket = 16 << 10
	// refuseWait and maxRefusals bound a refused client: gdb gives up after
	// two error replies, anything else is cut.
	refuseWait  = 10 * time.Second
	maxRefusals = 8
)

// readPacket skips bytes until a well-formed RSP packet ("$data#cs" with the
// right checksum) and returns it whole. Like QEMU's stub it ignores anything
// outside a packet (acks, garbage) and drops packets with a bad checksum, so
// garbage never reaches the emulator.
func readPacket(r *bufio.Reader) ([]byte, error) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if b != '$' {
			continue
		}
		pkt, sum := []byte{'$'}, byte(0)
		for {
			if b, err = r.ReadByte(); err != nil {
				return nil, err
			}
			if b == '#' || b == '$' || len(pkt) > maxPacket {
				break
			}
			pkt = append(pkt, b)
			sum += b
		}
		if b == '$' {
			_ = r.UnreadByte() // a new packet starts here
			continue
		}
		if b != '#' {
			continue
		}
		var cs [2]byte
		if _, err := io.ReadFull(r, cs[:]); err != nil {
			return nil, err
		}
		if v, err := strconv.ParseUint(string(cs[:]), 16, 8); err != nil || byte(v) != sum {
			continue
		}
		return append(pkt, '#', cs[0], cs[1]), nil
	}
}

// packet frames data as "$data#cs".
func packet(data string) []byte {
	sum := byte(0)
	for i := 0; i < len(data); i++ {
		sum += data[i]
	}
	return fmt.Appendf(nil, "$%s#%02x", data, sum)
}

// errorReply is an RSP error with text ("E.text"), which gdb prints as
// "Remote failure reply: E.text". Characters with a meaning in RSP framing
// ('*' is run-length encoding in replies) are replaced.
func errorReply(msg string) []byte {
	msg = strings.Map(func(r rune) rune {
		switch {
		case r == '$' || r == '#' || r == '}' || r == '*':
			return '_'
		case r < 0x20 || r > 0x7e:
			return ' '
		}
		return r
	}, msg)
	return append([]byte{'+'}, packet("E."+msg)...)
}

// refuse answers the client's packets, starting with the one already read
// (if answered is false), with an error carrying msg until it hangs up. gdb
// shows, for its first two packets:
//
//	warning: Remote failure reply: E.<msg>
//	Remote replied unexpectedly to 'vMustReplyEmpty': E.<msg>
//
// and disconnects. Other clients are cut after maxRefusals or refuseWait.
func refuse(c net.Conn, r *bufio.Reader, msg string) {
	_ = c.SetDeadline(time.Now().Add(refuseWait))
	reply := errorReply(msg)
	for range maxRefusals {
		if _, err := c.Write(reply); err != nil {
			return
		}
		if _, err := readPacket(r); err != nil {
			return
		}
	}
}

// Refuse reads the first packet a debugger sends on c and refuses it (and
// the next few) with msg, so gdb prints msg instead of a bare "connection
// closed". It does not close c. msctl uses it when the tunnel cannot open.
func Refuse(c net.Conn, msg string) error {
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(refuseWait))
	if _, err := readPacket(r); err != nil {
		return fmt.Errorf("gdb: no packet to refuse: %w", err)
	}
	refuse(c, r, msg)
	return nil
}
