package link_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/machineserver/machineserver/runner/link"
)

// The switch's unit tests run in synctest bubbles over net.Pipe, as the
// UART's do: the test plays every machine, writing QEMU's stream netdev
// framing (a 4-byte big-endian length, then the frame) and reading it.

// station is one machine on the switch: the test writes its frames on
// side, the switch has port, and what the switch writes to it is
// collected.
type station struct {
	name string
	addr [6]byte
	side net.Conn
	port net.Conn
	got  *frames
}

// srig is a switch with stations: the newest under each name, and all
// of them for closing.
type srig struct {
	sw       *link.Switch
	stations map[string]*station
	all      []*station
}

func newSwitchRig(t *testing.T, o link.SwitchOptions, names ...string) *srig {
	t.Helper()
	sw, err := link.NewSwitch(o)
	if err != nil {
		t.Fatal(err)
	}
	r := &srig{sw: sw, stations: map[string]*station{}}
	for i, n := range names {
		r.attach(t, n, addrOf(i+1))
	}
	return r
}

// addrOf is a locally administered unicast address ending in n.
func addrOf(n int) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, byte(n)} }

var bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func (r *srig) attach(t *testing.T, name string, addr [6]byte) *station {
	t.Helper()
	port, side := net.Pipe()
	s := &station{name: name, addr: addr, side: side, port: port, got: readFrames(side)}
	if err := r.sw.AddPort(name, port); err != nil {
		t.Fatal(err)
	}
	r.stations[name] = s
	r.all = append(r.all, s)
	return s
}

// end closes the switch and every pipe, and checks nothing is left.
func (r *srig) end(t *testing.T) {
	t.Helper()
	if err := r.sw.Close(); err != nil {
		t.Error(err)
	}
	for _, s := range r.all {
		s.side.Close()
		s.port.Close()
	}
	// A goroutine that called its WaitGroup's Done may not have returned
	// yet; one the switch left blocked stays blocked through Wait.
	synctest.Wait()
	if g := linkGoroutines(); len(g) > 0 {
		t.Errorf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
}

// frame is a 60-byte frame from src to dst of EtherType 0x88B5 whose
// payload starts with a big-endian seq.
func frame(dst, src [6]byte, seq uint32) []byte {
	f := make([]byte, 60)
	copy(f, dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	binary.BigEndian.PutUint32(f[14:], seq)
	return f
}

func seqOf(f []byte) uint32 { return binary.BigEndian.Uint32(f[14:]) }

// prefix is f's length prefix in QEMU's stream framing.
func prefix(f []byte) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(len(f)))
}

// send writes f from s in QEMU's stream framing, in one write as QEMU
// does.
func (s *station) send(t *testing.T, f []byte) {
	t.Helper()
	if _, err := s.side.Write(append(prefix(f), f...)); err != nil {
		t.Fatal(err)
	}
}

// to sends a frame to dst numbered seq.
func (s *station) to(t *testing.T, dst [6]byte, seq uint32) {
	t.Helper()
	s.send(t, frame(dst, s.addr, seq))
}

type frameArrival struct {
	at    time.Time
	frame []byte
}

// frames collects what a station receives, frame by frame.
type frames struct {
	mu  sync.Mutex
	got []frameArrival
	err error
}

func readFrames(c net.Conn) *frames {
	fs := &frames{}
	go func() {
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			f := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(c, f); err != nil {
				fs.mu.Lock()
				fs.err = err
				fs.mu.Unlock()
				return
			}
			fs.mu.Lock()
			fs.got = append(fs.got, frameArrival{time.Now(), f})
			fs.mu.Unlock()
		}
	}()
	return fs
}

func (fs *frames) all() []frameArrival {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.got)
}

// seqs are the received frames' numbers.
func (fs *frames) seqs() []uint32 {
	var out []uint32
	for _, a := range fs.all() {
		out = append(out, seqOf(a.frame))
	}
	return out
}

func portStats(t *testing.T, sw *link.Switch, name string) link.PortStats {
	t.Helper()
	for _, p := range sw.Stats().Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no port %s in %+v", name, sw.Stats())
	return link.PortStats{}
}

// An unknown destination is flooded to every other port, a learned one
// goes to its port only, a broadcast to all but the sender; records name
// where each frame went.
func TestSwitchLearnsAndFloods(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a", "b", "c")
		defer r.end(t)
		a, b, c := r.stations["a"], r.stations["b"], r.stations["c"]
		a.to(t, b.addr, 1) // b unknown: flooded
		synctest.Wait()
		b.to(t, a.addr, 2) // a learned
		synctest.Wait()
		a.to(t, b.addr, 3) // b learned
		synctest.Wait()
		c.to(t, bcast, 4)
		synctest.Wait()
		if got := a.got.seqs(); !slices.Equal(got, []uint32{2, 4}) {
			t.Errorf("a got %v", got)
		}
		if got := b.got.seqs(); !slices.Equal(got, []uint32{1, 3, 4}) {
			t.Errorf("b got %v", got)
		}
		if got := c.got.seqs(); !slices.Equal(got, []uint32{1}) {
			t.Errorf("c got %v (unicast to a learned address leaked)", got)
		}
		recs := r.sw.Capture(0)
		var to []string
		for _, rec := range recs {
			to = append(to, rec.From+">"+rec.To)
		}
		if want := []string{"a>b,c", "b>a", "a>b", "c>a,b"}; !slices.Equal(to, want) {
			t.Errorf("records: %q, want %q", to, want)
		}
		if !bytes.Equal(recs[0].Data, frame(b.addr, a.addr, 1)) || !recs[0].Time.Equal(time.Now()) || recs[0].Seq != 1 {
			t.Errorf("record: %+v", recs[0])
		}
		st := r.sw.Stats()
		if st.MACs != 3 || st.Records != 4 {
			t.Errorf("stats: %+v", st)
		}
		pa := portStats(t, r.sw, "a")
		if pa.Frames != 2 || pa.Bytes != 120 || pa.Flooded != 1 || pa.FramesOut != 2 || pa.BytesOut != 120 || pa.Dropped != 0 {
			t.Errorf("a: %+v", pa)
		}
		if pc := portStats(t, r.sw, "c"); pc.Flooded != 1 || pc.FramesOut != 1 {
			t.Errorf("c: %+v", pc)
		}
	})
}

// No frame goes back to its sender: not a broadcast, not a unicast to an
// address learned on its own port; and a lone port's frames go nowhere.
func TestSwitchNoHairpin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a")
		defer r.end(t)
		a := r.stations["a"]
		a.to(t, bcast, 1) // alone
		synctest.Wait()
		b := r.attach(t, "b", addrOf(2))
		other := addrOf(9) // a second address behind a's port
		a.send(t, frame(bcast, other, 2))
		synctest.Wait()
		a.to(t, other, 3) // learned on a's own port: filtered
		a.to(t, bcast, 4)
		synctest.Wait()
		if got := a.got.seqs(); len(got) != 0 {
			t.Errorf("a got its own frames back: %v", got)
		}
		if got := b.got.seqs(); !slices.Equal(got, []uint32{2, 4}) {
			t.Errorf("b got %v", got)
		}
		if pa := portStats(t, r.sw, "a"); pa.Filtered != 2 || pa.Flooded != 2 || pa.Frames != 4 {
			t.Errorf("a: %+v", pa)
		}
		if recs := r.sw.Capture(0); recs[0].To != "" || recs[2].To != "" || recs[0].Dropped != 0 {
			t.Errorf("records of frames that went nowhere: %+v", recs)
		}
	})
}

// Down drops every frame (nothing is learned from them) and counts it; up
// again, frames flow.
func TestSwitchDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Faults: link.Faults{Down: true}}, "a", "b")
		defer r.end(t)
		a, b := r.stations["a"], r.stations["b"]
		for i := range 5 {
			a.to(t, bcast, uint32(i))
			b.to(t, a.addr, uint32(100+i))
		}
		synctest.Wait()
		if len(a.got.all())+len(b.got.all()) != 0 {
			t.Fatalf("frames crossed a down switch: %v %v", a.got.seqs(), b.got.seqs())
		}
		st := r.sw.Stats()
		if st.MACs != 0 {
			t.Errorf("learned %d addresses from dropped frames", st.MACs)
		}
		for _, p := range st.Ports {
			if p.Frames != 5 || p.Dropped != 5 || p.Lost != 0 || p.FramesOut != 0 {
				t.Errorf("%s: %+v", p.Name, p)
			}
		}
		for _, rec := range r.sw.Capture(0) {
			if !rec.Down || rec.Dropped != 60 || rec.To != "" || rec.Delivered != nil {
				t.Errorf("record: %+v", rec)
			}
		}
		if err := r.sw.SetFaults(link.Faults{}); err != nil {
			t.Fatal(err)
		}
		a.to(t, b.addr, 7)
		synctest.Wait()
		if got := b.got.seqs(); !slices.Equal(got, []uint32{7}) {
			t.Errorf("after up b got %v", got)
		}
	})
}

// lossyRun sends n frames from a to b through a switch with faults f and
// returns the numbers b received and a's counters.
func lossyRun(t *testing.T, seed uint64, f link.Faults, n int) ([]uint32, link.PortStats) {
	var got []uint32
	var st link.PortStats
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Seed: seed, Faults: f, QueueFrames: n}, "a", "b")
		defer r.end(t)
		for i := range n {
			r.stations["a"].to(t, r.stations["b"].addr, uint32(i))
		}
		synctest.Wait()
		got, st = r.stations["b"].got.seqs(), portStats(t, r.sw, "a")
	})
	return got, st
}

func TestSwitchLossFraction(t *testing.T) {
	const n = 4000
	for _, p := range []float64{0.1, 0.5} {
		got, st := lossyRun(t, 7, link.Faults{Loss: p}, n)
		measured := 1 - float64(len(got))/n
		// 4000 independent frames: the standard deviation is below 0.008.
		if math.Abs(measured-p) > 0.04 {
			t.Errorf("loss %v: measured %.4f", p, measured)
		}
		if st.Frames != n || st.Lost != st.Dropped || st.Frames-st.Lost != uint64(len(got)) {
			t.Errorf("loss %v: counters %+v for %d delivered", p, st, len(got))
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("loss %v: delivered frames out of order or repeated", p)
		}
	}
	if got, _ := lossyRun(t, 7, link.Faults{Loss: 1}, 100); len(got) != 0 {
		t.Errorf("loss 1 delivered %d frames", len(got))
	}
}

// The same seed drops the same frames of each port, however the ports'
// frames interleave; another seed drops others.
func TestSwitchSeedReproduces(t *testing.T) {
	const n = 300
	run := func(seed uint64, interleave bool) (fromA, fromB []uint32) {
		synctest.Test(t, func(t *testing.T) {
			r := newSwitchRig(t, link.SwitchOptions{Seed: seed, Faults: link.Faults{Loss: 0.3}, QueueFrames: 2 * n}, "a", "b", "c")
			defer r.end(t)
			a, b, c := r.stations["a"], r.stations["b"], r.stations["c"]
			for i := range n {
				a.to(t, c.addr, uint32(i))
				if interleave {
					b.to(t, c.addr, uint32(n+i))
				}
			}
			if !interleave {
				for i := range n {
					b.to(t, c.addr, uint32(n+i))
				}
			}
			synctest.Wait()
			for _, s := range c.got.seqs() {
				if s < n {
					fromA = append(fromA, s)
				} else {
					fromB = append(fromB, s-n)
				}
			}
		})
		return fromA, fromB
	}
	a1, b1 := run(42, false)
	a2, b2 := run(42, true)
	a3, _ := run(43, false)
	if !slices.Equal(a1, a2) || !slices.Equal(b1, b2) {
		t.Error("the same seed dropped other frames when the ports interleaved differently")
	}
	if slices.Equal(a1, b1) {
		t.Error("two ports drew the same decisions")
	}
	if slices.Equal(a1, a3) {
		t.Error("two seeds gave the same result")
	}
}

// A corrupted frame differs from the sent one in exactly one bit; the
// record holds both.
func TestSwitchCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Faults: link.Faults{Corrupt: 1}, QueueFrames: 200}, "a", "b")
		defer r.end(t)
		a, b := r.stations["a"], r.stations["b"]
		// A third port, and b learned: a's frames to b go to b only,
		// a flipped destination bit notwithstanding, because the switch
		// forwards by the intact header.
		if err := r.sw.AddPort("c", nilSafePipe(t)); err != nil {
			t.Fatal(err)
		}
		b.to(t, bcast, 1000)
		synctest.Wait()
		for i := range 100 {
			a.to(t, b.addr, uint32(i))
		}
		synctest.Wait()
		got := b.got.all()
		recs := r.sw.Capture(1)
		if len(recs) != 100 {
			t.Fatalf("%d records", len(recs))
		}
		if len(got) != 100 {
			t.Fatalf("b got %d of 100 frames", len(got))
		}
		if pc := portStats(t, r.sw, "c"); pc.FramesOut != 1 {
			t.Errorf("c got %d frames, want b's broadcast only", pc.FramesOut)
		}
		for i, g := range got {
			sent := frame(b.addr, a.addr, uint32(i))
			diff := 0
			for k := range sent {
				diff += bits.OnesCount8(sent[k] ^ g.frame[k])
			}
			if diff != 1 {
				t.Fatalf("frame %d: %d bits differ", i, diff)
			}
			if !bytes.Equal(recs[i].Delivered, g.frame) || !bytes.Equal(recs[i].Data, sent) || recs[i].Corrupted != 1 {
				t.Fatalf("record %d: %+v", i, recs[i])
			}
		}
		if pa := portStats(t, r.sw, "a"); pa.Corrupted != 100 || pa.Dropped != 0 {
			t.Errorf("a: %+v", pa)
		}
	})
	// At 0.2, about a fifth.
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Seed: 3, Faults: link.Faults{Corrupt: 0.2}, QueueFrames: 2000}, "a", "b")
		defer r.end(t)
		a, b := r.stations["a"], r.stations["b"]
		for i := range 2000 {
			a.to(t, b.addr, uint32(i))
		}
		synctest.Wait()
		diff := 0
		for i, g := range b.got.all() {
			if !bytes.Equal(g.frame, frame(b.addr, a.addr, uint32(i))) {
				diff++
			}
		}
		if pa := portStats(t, r.sw, "a"); uint64(diff) != pa.Corrupted || math.Abs(float64(diff)/2000-0.2) > 0.04 {
			t.Errorf("corrupt 0.2: %d frames differ, %d counted", diff, pa.Corrupted)
		}
	})
}

// nilSafePipe is a switch port whose machine reads and drops everything.
func nilSafePipe(t *testing.T) net.Conn {
	port, side := net.Pipe()
	go io.Copy(io.Discard, side)
	t.Cleanup(func() { port.Close(); side.Close() })
	return port
}

// Each frame is held for the delay in force when it was read and never
// overtakes the one before it, also when the delay shrinks or comes from
// another port.
func TestSwitchDelayKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Faults: link.Faults{Delay: 10 * time.Millisecond}}, "a", "b", "c")
		defer r.end(t)
		a, b, c := r.stations["a"], r.stations["b"], r.stations["c"]
		// Learn c, so a and b's frames go to c only.
		c.to(t, bcast, 0)
		time.Sleep(time.Second)
		t0 := time.Now()
		a.to(t, c.addr, 1)
		time.Sleep(time.Millisecond)
		r.sw.SetFaults(link.Faults{Delay: 2 * time.Millisecond})
		b.to(t, c.addr, 2) // due at 3 ms, behind 1 due at 10 ms
		time.Sleep(19 * time.Millisecond)
		a.to(t, c.addr, 3) // due at 22 ms
		synctest.Wait()    // taken before the change
		r.sw.SetFaults(link.Faults{})
		b.to(t, c.addr, 4) // no delay, but behind 3
		time.Sleep(time.Second)
		want := []struct {
			seq uint32
			at  time.Duration
		}{{1, 10 * time.Millisecond}, {2, 10 * time.Millisecond}, {3, 22 * time.Millisecond}, {4, 22 * time.Millisecond}}
		got := c.got.all()
		if len(got) != len(want) {
			t.Fatalf("arrivals: %v", c.got.seqs())
		}
		for i, w := range want {
			if seqOf(got[i].frame) != w.seq || got[i].at.Sub(t0) != w.at {
				t.Errorf("arrival %d: %d at %v, want %d at %v", i, seqOf(got[i].frame), got[i].at.Sub(t0), w.seq, w.at)
			}
		}
		t1 := time.Now()
		a.to(t, c.addr, 5)
		synctest.Wait()
		if got := c.got.all(); len(got) != 5 || !got[4].at.Equal(t1) {
			t.Errorf("undelayed frame: %v", got)
		}
	})
}

// A machine that does not read fills its own queue only: frames for it
// beyond the bound are dropped and counted, and the others' traffic flows.
func TestSwitchQueueOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw, err := link.NewSwitch(link.SwitchOptions{QueueFrames: 4})
		if err != nil {
			t.Fatal(err)
		}
		r := &srig{sw: sw, stations: map[string]*station{}}
		a, c := r.attach(t, "a", addrOf(1)), r.attach(t, "c", addrOf(3))
		// a and c are learned before b is there, so their frames to
		// each other never go to b.
		a.to(t, bcast, 49)
		c.to(t, a.addr, 50)
		synctest.Wait()
		stuckPort, stuckSide := net.Pipe() // nobody reads stuckSide
		if err := sw.AddPort("b", stuckPort); err != nil {
			t.Fatal(err)
		}
		defer func() {
			r.end(t)
			stuckPort.Close()
			stuckSide.Close()
		}()
		// b says hello so it is learned (b's machine writes, it just
		// does not read).
		go stuckSide.Write(append(prefix(frame(bcast, addrOf(2), 0)), frame(bcast, addrOf(2), 0)...))
		synctest.Wait()
		// The first frame for b blocks the writer in its write; of the
		// next 9, 4 wait in the queue.
		a.to(t, addrOf(2), 0)
		synctest.Wait()
		for i := 1; i < 10; i++ {
			a.to(t, addrOf(2), uint32(i))
			a.to(t, c.addr, uint32(100+i))
			synctest.Wait() // c's queue, of 4 too, drained
		}
		synctest.Wait()
		if got := c.got.seqs(); len(got) != 11 { // a's hello, b's and a's 9
			t.Errorf("c got %v behind a machine that does not read", got)
		}
		if pb := portStats(t, sw, "b"); pb.Overflow != 5 || pb.FramesOut != 0 {
			t.Errorf("b: %+v", pb)
		}
	})
}

// A port removed at run time leaves its connection usable and its
// addresses forgotten; added again (a restarted machine), it switches as
// before. Names are unique while a port is in use.
func TestSwitchRemoveAndAddPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a", "b", "c")
		defer r.end(t)
		a, b, c := r.stations["a"], r.stations["b"], r.stations["c"]
		b.to(t, bcast, 0)
		synctest.Wait()
		if err := r.sw.AddPort("b", nilSafePipe(t)); err == nil {
			t.Error("a name in use was accepted")
		}
		for _, bad := range []string{"", "x,y"} {
			if err := r.sw.AddPort(bad, nilSafePipe(t)); err == nil {
				t.Errorf("port name %q accepted", bad)
			}
		}
		if err := r.sw.RemovePort("b"); err != nil {
			t.Fatal(err)
		}
		if err := r.sw.RemovePort("b"); !errors.Is(err, link.ErrNoPort) {
			t.Errorf("second remove: %v", err)
		}
		// b's address is forgotten: a frame to it floods to c.
		a.to(t, b.addr, 1)
		synctest.Wait()
		if got := c.got.seqs(); !slices.Equal(got, []uint32{0, 1}) {
			t.Errorf("c got %v", got)
		}
		if st := r.sw.Stats(); st.MACs != 1 || len(st.Ports) != 2 {
			t.Errorf("stats after remove: %+v", st)
		}
		// The removed port's connection works without the switch.
		go b.side.Write([]byte("after"))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(b.port, buf); err != nil || string(buf) != "after" {
			t.Errorf("port after remove: %q, %v", buf, err)
		}
		// The machine restarts: a new connection under the same name.
		b2 := r.attach(t, "b", b.addr)
		b2.to(t, bcast, 2)
		synctest.Wait()
		a.to(t, b.addr, 3)
		synctest.Wait()
		if got := b2.got.seqs(); !slices.Equal(got, []uint32{3}) {
			t.Errorf("re-added b got %v", got)
		}
		if got := c.got.seqs(); !slices.Equal(got, []uint32{0, 1, 2}) {
			t.Errorf("c got %v", got)
		}
	})
}

// A machine that goes away ends its port only, with the reason; its name
// can be attached again.
func TestSwitchPortEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a", "b", "c")
		defer r.end(t)
		a, b, c := r.stations["a"], r.stations["b"], r.stations["c"]
		b.to(t, bcast, 0)
		synctest.Wait()
		b.side.Close()
		synctest.Wait()
		pb := portStats(t, r.sw, "b")
		if !strings.Contains(pb.Err, "reading b") || !strings.Contains(pb.Err, io.EOF.Error()) {
			t.Errorf("b: %+v", pb)
		}
		a.to(t, b.addr, 1) // forgotten: flooded to c only
		synctest.Wait()
		if got := c.got.seqs(); !slices.Equal(got, []uint32{0, 1}) {
			t.Errorf("c got %v", got)
		}
		b2 := r.attach(t, "b", b.addr)
		a.to(t, bcast, 2)
		synctest.Wait()
		if got := b2.got.seqs(); !slices.Equal(got, []uint32{2}) {
			t.Errorf("b attached again got %v", got)
		}
		if pb := portStats(t, r.sw, "b"); pb.Err != "" {
			t.Errorf("b attached again: %+v", pb)
		}
	})
}

// A length above MaxFrame is not QEMU's framing: the port ends. A runt is
// dropped and counted, and the port goes on.
func TestSwitchBadFraming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a", "b")
		defer r.end(t)
		a, b := r.stations["a"], r.stations["b"]
		a.send(t, []byte{1, 2, 3})
		a.to(t, b.addr, 1)
		synctest.Wait()
		if got := b.got.seqs(); !slices.Equal(got, []uint32{1}) {
			t.Errorf("b got %v", got)
		}
		if pa := portStats(t, r.sw, "a"); pa.Runts != 1 || pa.Dropped != 1 || pa.Frames != 2 {
			t.Errorf("a: %+v", pa)
		}
		if _, err := a.side.Write(binary.BigEndian.AppendUint32(nil, link.MaxFrame+1)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if pa := portStats(t, r.sw, "a"); !strings.Contains(pa.Err, "not QEMU's netdev framing") {
			t.Errorf("a: %+v", pa)
		}
	})
}

// The capture keeps the newest records within its bound; a subscriber gets
// them live.
func TestSwitchCaptureBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 2000
		r := newSwitchRig(t, link.SwitchOptions{CaptureBytes: limit, QueueFrames: 100}, "a", "b")
		defer r.end(t)
		sub := r.sw.Subscribe(100)
		a, b := r.stations["a"], r.stations["b"]
		for i := range 100 {
			a.to(t, b.addr, uint32(i))
		}
		synctest.Wait()
		recs := r.sw.Capture(0)
		size := 0
		for _, rec := range recs {
			size += 96 + len(rec.Data) + len(rec.Delivered)
		}
		if size > limit || len(recs) == 0 || recs[len(recs)-1].Seq != 100 || seqOf(recs[len(recs)-1].Data) != 99 {
			t.Fatalf("%d records, %d bytes", len(recs), size)
		}
		if st := r.sw.Stats(); st.Records != 100 || st.Evicted != uint64(100-len(recs)) {
			t.Errorf("records %d, evicted %d, kept %d", st.Records, st.Evicted, len(recs))
		}
		for i := range 100 {
			if rec := <-sub.C; rec.Seq != uint64(i+1) || seqOf(rec.Data) != uint32(i) || rec.To != "b" {
				t.Fatalf("live record %d: %+v", i, rec)
			}
		}
		sub.Cancel()
	})
}

// pcapRecord is one record read back from a pcap file.
type pcapRecord struct {
	at    time.Time
	frame []byte
}

// parsePcap reads a little-endian, nanosecond pcap file strictly.
func parsePcap(t *testing.T, b []byte) []pcapRecord {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("pcap of %d bytes", len(b))
	}
	le := binary.LittleEndian
	if m, maj, mnr, snap, lt := le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), le.Uint32(b[16:]), le.Uint32(b[20:]); m != 0xa1b23c4d || maj != 2 || mnr != 4 || snap != link.MaxFrame || lt != 1 || le.Uint64(b[8:]) != 0 {
		t.Fatalf("pcap header % x", b[:24])
	}
	var out []pcapRecord
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("a truncated record header: % x", b)
		}
		sec, ns, incl, orig := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])
		if ns >= 1e9 || incl != orig || int(incl) > len(b)-16 {
			t.Fatalf("record header % x with %d bytes left", b[:16], len(b)-16)
		}
		out = append(out, pcapRecord{time.Unix(int64(sec), int64(ns)), b[16 : 16+incl]})
		b = b[16+incl:]
	}
	return out
}

// WritePcap writes every kept frame as sent, with its capture time to the
// nanosecond.
func TestSwitchWritePcap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a", "b")
		defer r.end(t)
		a, b := r.stations["a"], r.stations["b"]
		a.to(t, bcast, 1)
		time.Sleep(1500 * time.Microsecond)
		b.to(t, a.addr, 2)
		synctest.Wait()
		r.sw.SetFaults(link.Faults{Down: true})
		a.to(t, b.addr, 3) // dropped, still in the capture
		synctest.Wait()
		var buf bytes.Buffer
		if err := r.sw.WritePcap(&buf); err != nil {
			t.Fatal(err)
		}
		got := parsePcap(t, buf.Bytes())
		recs := r.sw.Capture(0)
		if len(got) != 3 || len(recs) != 3 {
			t.Fatalf("%d pcap records, %d captured", len(got), len(recs))
		}
		for i := range got {
			if !got[i].at.Equal(recs[i].Time) || !bytes.Equal(got[i].frame, recs[i].Data) {
				t.Errorf("pcap record %d: %v % x, captured %v % x", i, got[i].at, got[i].frame, recs[i].Time, recs[i].Data)
			}
		}
		if d := got[1].at.Sub(got[0].at); d != 1500*time.Microsecond {
			t.Errorf("timestamps %v apart", d)
		}
	})
	// Exact bytes of one record.
	var buf bytes.Buffer
	w, err := link.NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(time.Unix(1700000000, 123456789), []byte{0xaa, 0xbb}); err != nil {
		t.Fatal(err)
	}
	want := "4d3cb2a1" + "02000400" + "00000000" + "00000000" + "00100100" + "01000000" +
		"00f15365" + "15cd5b07" + "02000000" + "02000000" + "aabb"
	if got := fmt.Sprintf("%x", buf.Bytes()); got != want {
		t.Errorf("pcap bytes\n got %s\nwant %s", got, want)
	}
	if err := w.WriteFrame(time.Now(), make([]byte, link.MaxFrame+1)); err == nil {
		t.Error("a frame longer than the snapshot length was written")
	}
}

// Close returns with every goroutine gone, whatever they were blocked on:
// a read, a write to a machine that takes nothing, a delay; subscriptions
// end, and the switch refuses changes.
func TestSwitchCloseEndsEverything(t *testing.T) {
	for _, c := range []struct {
		name  string
		f     link.Faults
		stall bool // b reads nothing, so the switch's write blocks
	}{{"idle", link.Faults{}, false}, {"write blocked", link.Faults{}, true}, {"delay line", link.Faults{Delay: link.MaxDelay}, false}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sw, err := link.NewSwitch(link.SwitchOptions{Faults: c.f})
				if err != nil {
					t.Fatal(err)
				}
				a1, a2 := net.Pipe()
				b1, b2 := net.Pipe()
				defer func() {
					for _, p := range []net.Conn{a1, a2, b1, b2} {
						p.Close()
					}
				}()
				sw.AddPort("a", a1)
				sw.AddPort("b", b1)
				sub := sw.Subscribe(10)
				if c.name != "idle" {
					if !c.stall {
						readFrames(b2)
					}
					f := frame(bcast, addrOf(1), 1)
					if _, err := a2.Write(append(prefix(f), f...)); err != nil {
						t.Fatal(err)
					}
				}
				synctest.Wait()
				if err := sw.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				synctest.Wait() // as in end
				if g := linkGoroutines(); len(g) > 0 {
					t.Fatalf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
				}
				for range sub.C {
				}
				if err := sw.SetFaults(link.Faults{}); !errors.Is(err, link.ErrClosed) {
					t.Errorf("SetFaults after Close: %v", err)
				}
				if err := sw.AddPort("c", nilSafePipe(t)); !errors.Is(err, link.ErrClosed) {
					t.Errorf("AddPort after Close: %v", err)
				}
				if err := sw.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
				go a2.Write([]byte("after"))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(a1, buf); err != nil || string(buf) != "after" {
					t.Errorf("port after Close: %q, %v", buf, err)
				}
			})
		})
	}
}

// A port let go in the middle of a frame is reported: its stream is out
// of step.
func TestSwitchTornPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{}, "a")
		defer r.end(t)
		bPort, bSide := net.Pipe()
		defer bPort.Close()
		defer bSide.Close()
		if err := r.sw.AddPort("b", bPort); err != nil {
			t.Fatal(err)
		}
		go io.ReadFull(bSide, make([]byte, 2)) // takes 2 bytes of the frame, then nothing
		r.stations["a"].to(t, bcast, 1)
		synctest.Wait()
		if err := r.sw.RemovePort("b"); !errors.Is(err, link.ErrTorn) {
			t.Errorf("RemovePort mid-frame: %v", err)
		}
		// A reader cut off after a frame's length.
		if _, err := r.stations["a"].side.Write([]byte{0, 0, 0, 60}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := r.sw.RemovePort("a"); !errors.Is(err, link.ErrTorn) {
			t.Errorf("RemovePort mid-read: %v", err)
		}
	})
}

func TestSwitchOptionsValidate(t *testing.T) {
	if _, err := link.NewSwitch(link.SwitchOptions{Faults: link.Faults{Loss: 2}}); err == nil {
		t.Error("bad faults accepted at start")
	}
	if _, err := link.NewSwitch(link.SwitchOptions{QueueFrames: -1}); err == nil {
		t.Error("a negative queue accepted")
	}
	synctest.Test(t, func(t *testing.T) {
		r := newSwitchRig(t, link.SwitchOptions{Faults: link.Faults{Loss: 0.25}}, "a")
		defer r.end(t)
		if err := r.sw.SetFaults(link.Faults{Delay: -1}); err == nil || r.sw.Faults() != (link.Faults{Loss: 0.25}) {
			t.Errorf("bad change: %v, faults now %+v", err, r.sw.Faults())
		}
		if err := r.sw.AddPort("x", nil); err == nil {
			t.Error("a port without a connection accepted")
		}
	})
}
