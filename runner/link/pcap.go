package link

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// The classic libpcap file format (https://www.tcpdump.org/manpages/pcap-savefile.5.html)
// rather than pcapng: every reader takes it (tshark, Wireshark, tcpdump,
// scapy), and a stream of Ethernet frames needs nothing pcapng adds.
const (
	// pcapMagicNanos is the magic of a file whose timestamps' second
	// field is in nanoseconds, written in the file's byte order (little
	// endian here).
	pcapMagicNanos = 0xa1b23c4d
	// LinkTypeEthernet is LINKTYPE_ETHERNET: each record is a frame from
	// its destination address on, without preamble or FCS, which is
	// what a QEMU stream netdev carries.
	LinkTypeEthernet = 1
	pcapFileHeader   = 24
	pcapRecordHeader = 16
)

// PcapWriter writes frames to w as a pcap file (nanosecond timestamps,
// LINKTYPE_ETHERNET), so a capture can also be streamed as it is made.
type PcapWriter struct {
	w   io.Writer
	buf [pcapRecordHeader]byte
}

// NewPcapWriter writes the file header to w.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	var h [pcapFileHeader]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagicNanos)
	binary.LittleEndian.PutUint16(h[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(h[6:], 4)
	// h[8:16]: time zone offset and accuracy, both 0 by convention.
	binary.LittleEndian.PutUint32(h[16:], MaxFrame) // snapshot length
	binary.LittleEndian.PutUint32(h[20:], LinkTypeEthernet)
	if _, err := w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("link: writing pcap header: %w", err)
	}
	return &PcapWriter{w: w}, nil
}

// WriteFrame writes one frame captured at t, whole.
func (p *PcapWriter) WriteFrame(t time.Time, frame []byte) error {
	if len(frame) > MaxFrame {
		return fmt.Errorf("link: a %d-byte frame is longer than the pcap's snapshot length %d", len(frame), MaxFrame)
	}
	ns := t.UnixNano()
	binary.LittleEndian.PutUint32(p.buf[0:], uint32(ns/1e9))
	binary.LittleEndian.PutUint32(p.buf[4:], uint32(ns%1e9))
	binary.LittleEndian.PutUint32(p.buf[8:], uint32(len(frame)))  // captured
	binary.LittleEndian.PutUint32(p.buf[12:], uint32(len(frame))) // on the wire
	if _, err := p.w.Write(p.buf[:]); err != nil {
		return fmt.Errorf("link: writing pcap record: %w", err)
	}
	if _, err := p.w.Write(frame); err != nil {
		return fmt.Errorf("link: writing pcap record: %w", err)
	}
	return nil
}
