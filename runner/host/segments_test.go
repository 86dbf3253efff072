package host

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/runnerapi"
)

const segID = "00000000000000b1"

// frame is a 60-byte Ethernet frame to dst from 02:00:00:00:00:src (dst
// 0xff: broadcast) carrying payload, in QEMU's stream framing (a 4-byte
// big-endian length first).
func frame(dst, src byte, payload string) []byte {
	f := make([]byte, 60)
	if dst == 0xff {
		copy(f[:6], bytes.Repeat([]byte{0xff}, 6))
	} else {
		f[0], f[5] = 0x02, dst
	}
	f[6], f[11] = 0x02, src
	f[12], f[13] = 0x88, 0xb5
	copy(f[14:], payload)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(f))), f...)
}

// readFrame reads one framed frame's payload from a guest's NIC, bounded
// only against a hang.
func readFrame(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	defer c.SetReadDeadline(time.Time{})
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatal(err)
	}
	f := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(c, f); err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(string(f[14:]), "\x00")
}

// nicGuest is the guest side of the session's machine's NIC.
func (g *rig) nicGuest(t *testing.T, id string) net.Conn {
	t.Helper()
	c := g.guestOf(t, id).NICGuest()
	if c == nil {
		t.Fatalf("session %s's machine has no linked NIC", id)
	}
	return c
}

func (g *rig) startNIC(t *testing.T, id string, mac byte) {
	t.Helper()
	req := runnerapi.StartRequest{Machine: "lm3s6965evb", Program: g.prog, NIC: &runnerapi.NIC{MAC: "02:00:00:00:00:0" + string('0'+mac)}}
	if _, err := g.r.Start(t.Context(), id, req); err != nil {
		t.Fatal(err)
	}
}

// Sessions started with a linked NIC and put on a segment exchange
// frames: a broadcast reaches the other member, a reply to a learned
// address comes back; a member's restart puts its new machine on the
// segment; down drops; the pcap holds what was sent; delete ends it.
func TestSegmentBetweenSessions(t *testing.T) {
	g := newRig(t, nil)
	for i, id := range []string{"a", "b"} {
		g.session(t, id)
		g.startNIC(t, id, byte(i+1))
	}
	seg, err := g.r.PutSegment(segID, runnerapi.SegmentRequest{Members: []string{"a", "b"}})
	if err != nil || len(seg.Ports) != 2 || !seg.Ports[0].Attached || !seg.Ports[1].Attached {
		t.Fatalf("put: %+v %v", seg, err)
	}
	a, b := g.nicGuest(t, "a"), g.nicGuest(t, "b")
	a.Write(frame(0xff, 1, "hello"))
	if got := readFrame(t, b); got != "hello" {
		t.Fatalf("b took %q", got)
	}
	b.Write(frame(1, 2, "back"))
	if got := readFrame(t, a); got != "back" {
		t.Fatalf("a took %q", got)
	}

	// b's restart: its new machine's NIC takes its place.
	if err := g.r.Stop("b"); err != nil {
		t.Fatal(err)
	}
	g.startNIC(t, "b", 2)
	b = g.nicGuest(t, "b")
	a.Write(frame(2, 1, "again"))
	if got := readFrame(t, b); got != "again" {
		t.Fatalf("b's new machine took %q", got)
	}

	if _, err := g.r.SetSegmentFaults(segID, runnerapi.LinkFaults{Down: true}); err != nil {
		t.Fatal(err)
	}
	a.Write(frame(2, 1, "lost"))
	eventually(t, "the down segment drops a's frame", func() bool {
		s, _ := g.r.GetSegment(segID)
		return s.Ports[0].Dropped == 1
	})
	var pcap bytes.Buffer
	if err := g.r.SegmentPcap(segID, &pcap); err != nil || pcap.Len() < 24+4*(16+60) || !bytes.Contains(pcap.Bytes(), []byte("lost")) {
		t.Fatalf("pcap of %d bytes: %v", pcap.Len(), err)
	}
	if err := g.r.DeleteSegment(segID); err != nil {
		t.Fatal(err)
	}
	if _, err := g.r.GetSegment(segID); !isStatus(err, 404) {
		t.Fatalf("deleted segment: %v", err)
	}
}

// Bad segments and NICs are refused, saying why.
func TestSegmentRefusals(t *testing.T) {
	g := newRig(t, nil)
	for i, id := range []string{"a", "b", "c"} {
		g.session(t, id)
		g.startNIC(t, id, byte(i+1))
	}
	if _, err := g.r.PutSegment(segID, runnerapi.SegmentRequest{Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      string
		members []string
		code    int
		says    string
	}{
		{"00000000000000b2", []string{"c"}, 400, "a segment joins two or more sessions; got 1"},
		{"00000000000000b2", []string{"c", "c"}, 400, "session c is a member twice"},
		{"00000000000000b2", []string{"c", "nosuch"}, 422, "member nosuch has no emulator slot"},
		{"00000000000000b2", []string{"c", "b"}, 409, "session b is a member of segment 00000000000000b1 already"},
		{segID, []string{"a", "c"}, 409, "segment 00000000000000b1 has other members already"},
		{"nope", []string{"a", "c"}, 400, "is not 16 lowercase hex digits"},
	} {
		_, err := g.r.PutSegment(tc.id, runnerapi.SegmentRequest{Members: tc.members})
		if !isStatus(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("put %s %v: %v; want %d saying %q", tc.id, tc.members, err, tc.code, tc.says)
		}
	}
	g.session(t, "d")
	for _, tc := range []struct {
		machine, mac string
		code         int
		says         string
	}{
		{"netduino2", "02:00:00:00:00:09", 422, "board netduino2 has no NIC to link"},
		{"lm3s6965evb", "01:00:00:00:00:09", 400, `nic.mac "01:00:00:00:00:09" is not a unicast MAC`},
		{"lm3s6965evb", "02:00:00:00:00", 400, "is not a unicast MAC"},
	} {
		_, err := g.r.Start(t.Context(), "d", runnerapi.StartRequest{Machine: tc.machine, Program: g.prog, NIC: &runnerapi.NIC{MAC: tc.mac}})
		if !isStatus(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("start %s with %s: %v; want %d saying %q", tc.machine, tc.mac, err, tc.code, tc.says)
		}
	}
}
