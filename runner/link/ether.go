package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// frameHeader is the length prefix of QEMU's stream netdev framing
	// (net/stream.c in 7.2, as -netdev socket before it): every frame on
	// the socket is a 4-byte big-endian length and the frame, from its
	// destination address on, without FCS.
	frameHeader = 4
	// MaxFrame bounds a frame on a port: QEMU 7.2 neither sends nor
	// takes a longer one (NET_BUFSIZE). A longer length means the stream
	// is not QEMU's framing, and the port ends.
	MaxFrame = 4096 + 65536
	// ethHeader is a frame's destination, source and EtherType: a frame
	// shorter than that cannot be switched (a runt).
	ethHeader = 14
	// DefaultQueueFrames bounds each port's queue of frames to write
	// when SwitchOptions leave it 0.
	DefaultQueueFrames = 256
	// maxMACs bounds the learned addresses, so a guest sending from
	// made-up addresses cannot grow the runner's memory; once full, new
	// addresses are not learned and frames to them are flooded.
	maxMACs = 4096
)

// SwitchOptions configure a Switch.
type SwitchOptions struct {
	// Seed seeds the fault decisions: the same seed and the same frames
	// from a port give the same drops and flips. Zero is a seed like any
	// other.
	Seed uint64
	// CaptureBytes bounds the capture kept for Capture and WritePcap, as
	// Options.CaptureBytes does for a UART.
	CaptureBytes int
	// QueueFrames bounds each port's queue of frames waiting to be
	// written (waiting for a delay, or for a machine that does not read,
	// e.g. a paused one): frames for a full queue are dropped and counted
	// (PortStats.Overflow). 0 is DefaultQueueFrames.
	QueueFrames int
	// Faults are in force from the first frame.
	Faults Faults
	// Log receives ports that end by themselves; nil logs nothing.
	Log *slog.Logger
}

// ErrNoPort is returned for a port name the switch does not have.
var ErrNoPort = errors.New("link: no such port")

// ErrTorn is returned when a port was let go in the middle of a frame (a
// write or read cut short by RemovePort or Close): its stream no longer
// starts at a frame boundary, so whoever reads or writes it next is out of
// step with QEMU.
var ErrTorn = errors.New("link: port left in the middle of a frame")

// Switch joins machines' network interfaces as one Ethernet segment: a
// learning switch the runner owns, so the machines reach each other and
// nothing else. Every port is a connection carrying QEMU's stream netdev
// framing (a machine's -netdev stream); ports are added and removed while
// it runs (a node's machine restarting gets a new connection under the
// same name). Every method is safe for concurrent use.
//
// # Forwarding
//
// A frame's source address is learned on the port it came from (group
// addresses never are); a frame to a learned address goes to that port
// only, and one to a broadcast, multicast or not yet learned address is
// flooded to every other port. No frame goes back to the port it came
// from: one whose destination was learned on its own port is filtered.
// Addresses learned on a port are forgotten when it is removed or ends.
// There is no ageing: a machine keeps its port for the life of the switch,
// and an address that moves is learned again from its next frame.
//
// # Faults act per frame
//
// A frame is the unit a network loses, so Loss and Corrupt are
// probabilities applied to each frame read from a port, and Down drops
// every frame. Down and Loss act as if the frame never reached the switch
// (nothing is learned from it); Corrupt flips one bit, chosen at random
// over the whole frame, of what is delivered, after the switch forwarded
// the frame by its intact header. QEMU's frames carry no FCS, so the
// receiving NIC cannot tell: the firmware's own checks see the damage,
// unless the bit lands in the destination address and the NIC filters the
// frame out. A flooded frame gets one decision for all its ports.
//
// Each port draws from its own random source, seeded from
// SwitchOptions.Seed and the port's name, so the decisions on a port's
// frames depend on those frames only, not on how the ports' reads
// interleave; a port added again under its name starts its draws over.
//
// Delay holds each frame for the delay in force when it was read and never
// reorders: a port's frames are written in the order the switch took them,
// each no earlier than its due time and no earlier than the one before it.
// A fault change applies to frames read after it.
//
// # Queues
//
// Unlike a UART link, which holds a sender back, a switch cannot: one
// machine that does not read (paused, or slow) would stop every other.
// Each port has a queue of frames to write (SwitchOptions.QueueFrames);
// a frame for a full queue is dropped, as a switch's egress buffer drops
// it, and counted in the port's Overflow.
//
// # Capture
//
// Every frame read makes a Record: From is the port it came from; To the
// ports it was forwarded to, comma-separated in name order ("" when it
// went nowhere; a port whose queue was full still drops it, see Queues);
// Data the frame as sent, without the length prefix; Delivered the frame
// as delivered when Corrupt changed it (Corrupted is then 1); Down,
// Dropped and Lost in bytes as for a UART (a dropped frame's whole
// length). WritePcap writes the kept records' frames as sent: what the
// machines put on the wire, the records saying what became of it.
type Switch struct {
	faults atomic.Pointer[Faults]
	cap    *capture
	seed   uint64
	queue  int
	log    *slog.Logger

	mu    sync.Mutex
	ports map[string]*ethPort // by name, ended ones included
	// attached are the ports frames go to, in name order.
	attached []*ethPort
	macs     map[mac]*ethPort
	closed   bool
	// closeOnce makes Close's wait and the capture's end happen once.
	closeOnce sync.Once
	closeErr  error
}

// mac is an Ethernet address.
type mac [6]byte

// group: a broadcast or multicast address (the I/G bit).
func (m mac) group() bool { return m[0]&1 != 0 }

// NewSwitch makes a switch with no ports.
func NewSwitch(o SwitchOptions) (*Switch, error) {
	if err := o.Faults.Validate(); err != nil {
		return nil, err
	}
	if o.QueueFrames < 0 {
		return nil, fmt.Errorf("link: a queue of %d frames; 0 (the default) or more", o.QueueFrames)
	}
	limit := o.CaptureBytes
	if limit == 0 {
		limit = DefaultCaptureBytes
	}
	queue := o.QueueFrames
	if queue == 0 {
		queue = DefaultQueueFrames
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Switch{
		cap: newCapture(limit), seed: o.Seed, queue: queue, log: log,
		ports: map[string]*ethPort{}, macs: map[mac]*ethPort{},
	}
	f := o.Faults
	s.faults.Store(&f)
	return s, nil
}

// AddPort attaches c (one machine's network interface) as the port name
// and starts switching its frames. The switch reads c from now on: nothing
// else may read it until RemovePort or Close has returned. A name in use
// is refused unless its port has ended (its machine went away): the new
// connection then takes its place, with counters from zero.
func (s *Switch) AddPort(name string, c net.Conn) error {
	if name == "" || strings.Contains(name, ",") {
		return fmt.Errorf("link: port name %q must be non-empty and without commas", name)
	}
	if c == nil {
		return errors.New("link: a port needs a connection")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if old := s.ports[name]; old != nil {
		if !old.ended() {
			return fmt.Errorf("link: port %q is in use", name)
		}
		// Its supervisor may not have detached it yet: no frame may be
		// queued for it once its successor is there.
		s.detachLocked(old)
	}
	h := fnv.New64a()
	io.WriteString(h, name)
	p := &ethPort{
		sw: s, name: name, conn: c,
		rng:  rand.New(rand.NewPCG(s.seed, h.Sum64())),
		out:  make(chan outFrame, s.queue),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.ports[name] = p
	i, _ := slices.BinarySearchFunc(s.attached, name, func(q *ethPort, n string) int { return strings.Compare(q.name, n) })
	s.attached = slices.Insert(s.attached, i, p)
	p.wg.Add(2)
	go p.read()
	go p.write()
	go p.supervise()
	return nil
}

// RemovePort stops switching name's frames and returns once its goroutines
// are gone; the connection stays open (its deadlines cleared) and frames
// queued for it are discarded. The error is ErrNoPort for an unknown
// name, and wraps ErrTorn when the port was left mid-frame.
func (s *Switch) RemovePort(name string) error {
	s.mu.Lock()
	p := s.ports[name]
	if p == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNoPort, name)
	}
	delete(s.ports, name)
	s.detachLocked(p)
	s.mu.Unlock()
	p.stop(nil)
	<-p.done
	return p.tornErr()
}

// SetFaults changes the faults for the frames read from now on.
func (s *Switch) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.faults.Store(&f)
	return nil
}

// Faults are the faults in force.
func (s *Switch) Faults() Faults { return *s.faults.Load() }

// Close removes every port (as RemovePort does) and returns once none of
// the switch's goroutines is left; subscriptions end. Closing twice is
// harmless. The error wraps ErrTorn when a port was left mid-frame.
func (s *Switch) Close() error {
	s.mu.Lock()
	s.closed = true
	ports := make([]*ethPort, 0, len(s.ports))
	for _, p := range s.ports {
		ports = append(ports, p)
	}
	s.mu.Unlock()
	s.closeOnce.Do(func() {
		for _, p := range ports {
			p.stop(nil)
		}
		var errs []error
		for _, p := range ports {
			<-p.done
			errs = append(errs, p.tornErr())
		}
		s.cap.close()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// detachLocked takes p out of forwarding and forgets its addresses.
func (s *Switch) detachLocked(p *ethPort) {
	if i := slices.Index(s.attached, p); i >= 0 {
		s.attached = slices.Delete(s.attached, i, i+1)
	}
	for m, q := range s.macs {
		if q == p {
			delete(s.macs, m)
		}
	}
}

// PortStats are one port's counters, in frames unless named otherwise.
type PortStats struct {
	Name string `json:"name"`
	// Frames and Bytes were read from the port: what its machine sent.
	Frames uint64 `json:"frames"`
	Bytes  uint64 `json:"bytes"`
	// Flooded of them went to every other port (broadcast, multicast
	// or an unknown destination); Filtered went nowhere (their
	// destination is on their own port, or there was no other port).
	Flooded  uint64 `json:"flooded"`
	Filtered uint64 `json:"filtered"`
	// Dropped were lost or read while down; Lost is the part the Loss
	// fault took. Corrupted were delivered with a bit flipped. Runts
	// were too short to switch, and dropped.
	Dropped   uint64 `json:"dropped"`
	Lost      uint64 `json:"lost"`
	Corrupted uint64 `json:"corrupted"`
	Runts     uint64 `json:"runts"`
	// FramesOut and BytesOut were written to the port; Overflow frames
	// for it were dropped because its queue was full.
	FramesOut uint64 `json:"frames_out"`
	BytesOut  uint64 `json:"bytes_out"`
	Overflow  uint64 `json:"overflow"`
	// Err says why the port ended by itself (its machine went away, or
	// it sent something that is not QEMU's framing); the switch no
	// longer uses it.
	Err string `json:"err,omitempty"`
}

// SwitchStats are a switch's counters.
type SwitchStats struct {
	// Ports are in name order.
	Ports []PortStats `json:"ports"`
	// MACs is how many addresses are learned now.
	MACs int `json:"macs"`
	// Records and Evicted count capture records as Stats does for a UART.
	Records uint64 `json:"records"`
	Evicted uint64 `json:"evicted"`
}

// Stats are the counters now.
func (s *Switch) Stats() SwitchStats {
	s.mu.Lock()
	ports := make([]*ethPort, 0, len(s.ports))
	for _, p := range s.ports {
		ports = append(ports, p)
	}
	st := SwitchStats{MACs: len(s.macs)}
	s.mu.Unlock()
	slices.SortFunc(ports, func(a, b *ethPort) int { return strings.Compare(a.name, b.name) })
	for _, p := range ports {
		ps := PortStats{
			Name: p.name, Frames: p.frames.Load(), Bytes: p.bytes.Load(),
			Flooded: p.flooded.Load(), Filtered: p.filtered.Load(),
			Dropped: p.dropped.Load(), Lost: p.lost.Load(), Corrupted: p.corrupted.Load(), Runts: p.runts.Load(),
			FramesOut: p.framesOut.Load(), BytesOut: p.bytesOut.Load(), Overflow: p.overflow.Load(),
		}
		if p.ended() && p.err != nil {
			ps.Err = p.err.Error()
		}
		st.Ports = append(st.Ports, ps)
	}
	st.Records, st.Evicted = s.cap.counts()
	return st
}

// Capture is the kept records whose Seq is above after (0 for all), oldest
// first; the records share their byte slices with the switch: read them,
// do not change them.
func (s *Switch) Capture(after uint64) []Record { return s.cap.since(after) }

// Subscribe delivers every record made from now on, as UART.Subscribe
// does.
func (s *Switch) Subscribe(buffer int) *Subscription { return s.cap.subscribe(buffer) }

// WritePcap writes the kept records' frames, as their senders sent them,
// to w as a pcap file (see PcapWriter); the records say what the faults
// did to each.
func (s *Switch) WritePcap(w io.Writer) error {
	pw, err := NewPcapWriter(w)
	if err != nil {
		return err
	}
	for _, r := range s.cap.since(0) {
		if err := pw.WriteFrame(r.Time, r.Data); err != nil {
			return err
		}
	}
	return nil
}

// outFrame is a frame waiting in a port's queue: wire is the length prefix
// and the frame, shared by every port a flooded frame goes to.
type outFrame struct {
	due  time.Time
	wire []byte
}

// ethPort is one machine's interface on the switch: a reader that applies
// the faults and forwards, a writer that serves the port's queue, and a
// supervisor that ends both.
type ethPort struct {
	sw   *Switch
	name string
	conn net.Conn
	rng  *rand.Rand // the reader's only
	out  chan outFrame

	wg       sync.WaitGroup // reader and writer
	stopOnce sync.Once
	quit     chan struct{} // closed to stop
	done     chan struct{} // closed once every goroutine has returned
	err      error         // why it ended by itself; written before quit is closed
	// torn: a read or write stopped part-way through a frame.
	torn atomic.Bool

	frames, bytes, flooded, filtered atomic.Uint64
	dropped, lost, corrupted, runts  atomic.Uint64
	framesOut, bytesOut, overflow    atomic.Uint64
}

func (p *ethPort) stop(err error) {
	p.stopOnce.Do(func() {
		p.err = err
		close(p.quit)
	})
}

// ended: the port's goroutines are gone (or going); the switch no longer
// uses it.
func (p *ethPort) ended() bool {
	select {
	case <-p.quit:
		return true
	default:
		return false
	}
}

func (p *ethPort) tornErr() error {
	if p.err == nil && p.torn.Load() {
		return fmt.Errorf("%w: %q", ErrTorn, p.name)
	}
	return nil
}

// supervise unblocks the reader and writer once the port stops, through
// the conn's deadline (the conn is the machine's, so it is not closed),
// clears the deadline for whoever uses the conn next, and takes the port
// out of forwarding.
func (p *ethPort) supervise() {
	<-p.quit
	p.conn.SetDeadline(time.Unix(1, 0))
	p.wg.Wait()
	p.conn.SetDeadline(time.Time{})
	s := p.sw
	s.mu.Lock()
	s.detachLocked(p)
	s.mu.Unlock()
	if p.err != nil {
		s.log.Info("switch port ended", "port", p.name, "err", p.err)
	}
	close(p.done)
}

func (p *ethPort) read() {
	defer p.wg.Done()
	var hdr [frameHeader]byte
	for {
		if n, err := io.ReadFull(p.conn, hdr[:]); err != nil {
			p.readFailed(n, err)
			return
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size > MaxFrame {
			p.stop(fmt.Errorf("link: reading %s: a %d-byte frame, longer than %d: not QEMU's netdev framing", p.name, size, MaxFrame))
			return
		}
		// One buffer for the prefix and the frame: it is written to
		// the other ports as it is.
		wire := make([]byte, frameHeader+int(size))
		copy(wire, hdr[:])
		if n, err := io.ReadFull(p.conn, wire[frameHeader:]); err != nil {
			p.readFailed(frameHeader+n, err)
			return
		}
		p.sw.forward(p, wire)
	}
}

func (p *ethPort) readFailed(n int, err error) {
	if n > 0 {
		p.torn.Store(true)
	}
	p.stop(fmt.Errorf("link: reading %s: %w", p.name, err))
}

// forward applies the faults to a frame read from p, learns from it,
// records it and queues it for the ports it goes to. It never blocks: a
// full queue drops the frame for that port.
func (s *Switch) forward(p *ethPort, wire []byte) {
	now := time.Now()
	f := s.faults.Load()
	frame := wire[frameHeader:]
	rec := Record{Time: now, From: p.name, Data: frame}
	p.frames.Add(1)
	p.bytes.Add(uint64(len(frame)))
	if len(frame) < ethHeader {
		p.runts.Add(1)
		p.dropped.Add(1)
		rec.Dropped = len(frame)
		s.cap.add(rec)
		return
	}
	flip := -1
	switch {
	case f.Down:
		rec.Down, rec.Dropped = true, len(frame)
	case f.Loss > 0 && p.rng.Float64() < f.Loss:
		rec.Lost, rec.Dropped = len(frame), len(frame)
	case f.Corrupt > 0 && p.rng.Float64() < f.Corrupt:
		flip = p.rng.IntN(len(frame) * 8)
	}
	if rec.Dropped > 0 {
		p.dropped.Add(1)
		if rec.Lost > 0 {
			p.lost.Add(1)
		}
		s.cap.add(rec)
		return
	}
	to := s.route(p, mac(frame[6:12]), mac(frame[0:6]))
	out := wire
	if flip >= 0 {
		out = slices.Clone(wire)
		out[frameHeader+flip/8] ^= 1 << (flip % 8)
		rec.Delivered, rec.Corrupted = out[frameHeader:], 1
		p.corrupted.Add(1)
	}
	names := make([]string, len(to))
	for i, q := range to {
		names[i] = q.name
	}
	rec.To = strings.Join(names, ",")
	s.cap.add(rec)
	due := now.Add(f.Delay)
	for _, q := range to {
		select {
		case q.out <- outFrame{due: due, wire: out}:
		default:
			q.overflow.Add(1)
		}
	}
}

// route learns src on p and returns the ports a frame to dst goes to, in
// name order.
func (s *Switch) route(p *ethPort, src, dst mac) []*ethPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !src.group() {
		if _, known := s.macs[src]; known || len(s.macs) < maxMACs {
			s.macs[src] = p
		}
	}
	if !dst.group() {
		if q, ok := s.macs[dst]; ok {
			if q == p {
				p.filtered.Add(1)
				return nil
			}
			return []*ethPort{q}
		}
	}
	to := make([]*ethPort, 0, len(s.attached))
	for _, q := range s.attached {
		if q != p {
			to = append(to, q)
		}
	}
	if len(to) == 0 {
		p.filtered.Add(1)
	} else {
		p.flooded.Add(1)
	}
	return to
}

func (p *ethPort) write() {
	defer p.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case o := <-p.out:
			if wait := time.Until(o.due); wait > 0 {
				t.Reset(wait)
				select {
				case <-t.C:
				case <-p.quit:
					return
				}
			}
			n, err := p.conn.Write(o.wire)
			if err != nil {
				if n > 0 && n < len(o.wire) {
					p.torn.Store(true)
				}
				p.stop(fmt.Errorf("link: writing %s: %w", p.name, err))
				return
			}
			p.framesOut.Add(1)
			p.bytesOut.Add(uint64(len(o.wire) - frameHeader))
		case <-p.quit:
			return
		}
	}
}
