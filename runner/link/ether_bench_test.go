package link_test

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/link"
)

// BenchmarkEthernetSwitch compares the frame round trip between two
// mps2-an385 QEMUs through link.Switch with two joined directly by a
// stream netdev (ethpong's the server, ethping's the client), all four
// running at once. Each iteration takes the next rttSamples round trips
// each pair's ethping reports (guest microseconds from the ping's
// hand-over to the NIC to the pong's arrival; guest time is host time
// without icount). It reports the medians and the switch's cost as a
// ratio to the direct netdev.
func BenchmarkEthernetSwitch(b *testing.B) {
	sw, err := link.NewSwitch(link.SwitchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sw.Close() })
	viaPing := startEther(b, "ping", firmware(b, "ethping.elf"), nodeMAC(1), "", false)
	viaPong := startEther(b, "pong", firmware(b, "ethpong.elf"), nodeMAC(2), "", false)
	for _, n := range []*enode{viaPing, viaPong} {
		if err := sw.AddPort(n.name, n.nic); err != nil {
			b.Fatal(err)
		}
	}
	sock := filepath.Join(shortDir(b), "l.sock")
	// The server first: its handshake returns once its netdev listens.
	dirPong := startEther(b, "direct-pong", firmware(b, "ethpong.elf"), nodeMAC(4), sock, true)
	dirPing := startEther(b, "direct-ping", firmware(b, "ethping.elf"), nodeMAC(3), sock, false)
	dirPong.waitPeer(b)
	for _, n := range []*enode{viaPong, viaPing, dirPong, dirPing} {
		n.resume(b)
	}
	pings := []*enode{viaPing, dirPing}
	names := []string{"switch", "direct"}
	for _, p := range pings {
		waitLines(b, p.out, 0, "rtt ", 1)
	}
	const rttSamples = 5
	rtts := make([][]float64, len(pings))
	for b.Loop() {
		marks := make([]int, len(pings))
		for k, p := range pings {
			marks[k] = p.out.Len()
		}
		for k, p := range pings {
			for _, l := range waitLines(b, p.out, marks[k], "rtt ", rttSamples)[:rttSamples] {
				rtts[k] = append(rtts[k], float64(field(b, l, 2)))
			}
		}
	}
	median := func(v []float64) float64 {
		s := slices.Sorted(slices.Values(v))
		return s[len(s)/2]
	}
	for k, name := range names {
		b.ReportMetric(median(rtts[k]), name+"-rtt-us")
	}
	b.ReportMetric(median(rtts[0])/median(rtts[1]), "rtt-x")
	for _, p := range sw.Stats().Ports {
		if p.Overflow > 0 || p.Dropped > 0 {
			b.Errorf("%s lost frames: %+v", p.Name, p)
		}
	}
}

// BenchmarkSwitchRoundTrip is the switch's own cost without QEMU: a frame
// round trip to a peer that echoes it, over unix socket pairs, directly
// and through a switch (one port each way), one after the other in each
// iteration. Hot, the host's wake-up latency of idle threads, which
// dominates between QEMUs, is mostly out of it. It reports the mean round
// trips and their ratio.
func BenchmarkSwitchRoundTrip(b *testing.B) {
	sw, err := link.NewSwitch(link.SwitchOptions{CaptureBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer sw.Close()
	direct, directPeer := socketPair(b)
	via, aPort := socketPair(b)
	peerPort, viaPeer := socketPair(b)
	if err := sw.AddPort("a", aPort); err != nil {
		b.Fatal(err)
	}
	if err := sw.AddPort("b", peerPort); err != nil {
		b.Fatal(err)
	}
	go echoFrames(directPeer)
	go echoFrames(viaPeer)
	f := frame(addrOf(2), addrOf(1), 1)
	msg := append(prefix(f), f...)
	got := make([]byte, len(msg))
	roundTrip := func(c net.Conn) time.Duration {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	var sums [2]time.Duration
	n := 0
	for b.Loop() {
		sums[0] += roundTrip(direct)
		sums[1] += roundTrip(via)
		n++
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
	b.ReportMetric(us(sums[0]), "direct-rtt-us")
	b.ReportMetric(us(sums[1]), "switch-rtt-us")
	b.ReportMetric(float64(sums[1])/float64(sums[0]), "rtt-x")
}

// socketPair is two connected unix stream sockets, closed at the end.
func socketPair(b *testing.B) (net.Conn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// echoFrames sends every frame back to its sender, addresses swapped,
// until c ends.
func echoFrames(c net.Conn) {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		f := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
		copy(f, hdr[:])
		if _, err := io.ReadFull(c, f[4:]); err != nil {
			return
		}
		var dst [6]byte
		copy(dst[:], f[4:10])
		copy(f[4:10], f[10:16])
		copy(f[10:16], dst[:])
		if _, err := c.Write(f); err != nil {
			return
		}
	}
}
