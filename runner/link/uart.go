package link

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

const (
	// readSize is the most one read takes from a port; a UART rarely has
	// more waiting.
	readSize = 4096
	// lineChunks bounds the delay line per direction; when it is full the
	// reader waits, so the sender is held back instead of the runner's
	// memory growing.
	lineChunks = 1024
	// MaxDelay bounds Faults.Delay: longer than any UART timeout a user
	// would test, short enough that a forgotten setting does not look like
	// a dead link for long. It is the API's bound, so every delay the API
	// accepts is one a link takes.
	MaxDelay = model.MaxLinkDelay
)

// Faults are what a link does to the bytes it carries (see the package
// documentation: Loss and Corrupt act per byte). The zero value is a clean
// link.
type Faults struct {
	// Down drops every byte while set.
	Down bool `json:"down"`
	// Loss is the probability, 0 to 1, that a byte is dropped.
	Loss float64 `json:"loss"`
	// Corrupt is the probability, 0 to 1, that a byte that is not lost
	// has one of its bits flipped.
	Corrupt float64 `json:"corrupt"`
	// Delay is how long each chunk is held, 0 to MaxDelay.
	Delay time.Duration `json:"delay"`
}

// Validate says why f cannot be applied, nil when it can.
func (f Faults) Validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", f.Loss}, {"corrupt", f.Corrupt}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("link: %s %v is not a probability from 0 to 1", p.name, p.v)
		}
	}
	if f.Delay < 0 || f.Delay > MaxDelay {
		return fmt.Errorf("link: delay %v is outside 0 to %v", f.Delay, MaxDelay)
	}
	return nil
}

// Options configure a link.
type Options struct {
	// Names are the two ends as records and counters name them, e.g.
	// "gw:uart1" and "sensor:uart0"; "a" and "b" when empty.
	Names [2]string
	// Seed seeds the fault decisions: the same seed and the same traffic
	// give the same drops and flips. Zero is a seed like any other.
	Seed uint64
	// CaptureBytes bounds the capture kept for Capture (the records' bytes
	// plus a fixed cost per record): the oldest records go first. 0 is
	// DefaultCaptureBytes; negative keeps none (subscribers still get
	// every record).
	CaptureBytes int
	// Faults are in force from the first byte.
	Faults Faults
	// Log receives the link's end; nil logs nothing.
	Log *slog.Logger
}

// DefaultCaptureBytes is the capture bound when Options leave it 0.
const DefaultCaptureBytes = 1 << 20

// ErrClosed is returned for changes asked of a link that has ended.
var ErrClosed = errors.New("link: closed")

// UART carries bytes both ways between two ports. Every method is safe for
// concurrent use.
type UART struct {
	conns  [2]net.Conn
	dirs   [2]*direction
	faults atomic.Pointer[Faults]
	cap    *capture
	log    *slog.Logger

	wg       sync.WaitGroup // the directions' goroutines
	stopOnce sync.Once
	quit     chan struct{} // closed to stop
	done     chan struct{} // closed once every goroutine has returned
	err      error         // why it ended; written before quit is closed
}

// NewUART joins a and b (each one machine's UART port) and starts carrying
// bytes. The link reads both conns from now on: nothing else may read them
// until Close has returned.
func NewUART(a, b net.Conn, o Options) (*UART, error) {
	if a == nil || b == nil {
		return nil, errors.New("link: both ends are needed")
	}
	if err := o.Faults.Validate(); err != nil {
		return nil, err
	}
	names := o.Names
	for i, d := range [2]string{"a", "b"} {
		if names[i] == "" {
			names[i] = d
		}
	}
	if names[0] == names[1] {
		return nil, fmt.Errorf("link: both ends are named %q", names[0])
	}
	limit := o.CaptureBytes
	if limit == 0 {
		limit = DefaultCaptureBytes
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &UART{
		conns: [2]net.Conn{a, b},
		cap:   newCapture(limit),
		log:   log,
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	f := o.Faults
	u.faults.Store(&f)
	for i := range 2 {
		d := &direction{
			u: u, from: names[i], to: names[1-i],
			src: u.conns[i], dst: u.conns[1-i],
			// The stream number keeps the two directions' draws apart.
			rng:  rand.New(rand.NewPCG(o.Seed, uint64(i)+1)),
			line: make(chan chunk, lineChunks),
		}
		u.dirs[i] = d
		u.wg.Add(2)
		go d.read()
		go d.write()
	}
	go u.supervise()
	return u, nil
}

// SetFaults changes the faults for the bytes read from now on.
func (u *UART) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	select {
	case <-u.quit:
		return ErrClosed
	default:
	}
	u.faults.Store(&f)
	return nil
}

// Faults are the faults in force.
func (u *UART) Faults() Faults { return *u.faults.Load() }

// Close stops the link and returns once none of its goroutines is left;
// the ports stay open and usable (their deadlines are cleared). Bytes in
// the delay line are discarded. Closing twice is harmless.
func (u *UART) Close() error {
	u.stop(nil)
	<-u.done
	return nil
}

// Done is closed when the link has ended (Close, or a port that failed or
// ended); Err then says why.
func (u *UART) Done() <-chan struct{} { return u.done }

// Err is why the link ended by itself (a port's error, io.EOF when a
// machine went away); nil while it runs and after Close.
func (u *UART) Err() error {
	select {
	case <-u.quit:
		return u.err
	default:
		return nil
	}
}

func (u *UART) stop(err error) {
	u.stopOnce.Do(func() {
		u.err = err
		close(u.quit)
	})
}

// supervise unblocks the goroutines once the link stops, through the
// conns' deadlines (a read or write in progress returns at once), because
// the ports are the machines' and closing them would end their serial
// connections; the deadlines are cleared after, for whoever uses the
// ports next.
func (u *UART) supervise() {
	<-u.quit
	past := time.Unix(1, 0)
	for _, c := range u.conns {
		c.SetDeadline(past) // a closed conn has no reader to unblock
	}
	u.wg.Wait()
	for _, c := range u.conns {
		c.SetDeadline(time.Time{})
	}
	u.cap.close()
	if u.err != nil {
		u.log.Info("link ended", "a", u.dirs[0].from, "b", u.dirs[1].from, "err", u.err)
	}
	close(u.done)
}

// DirStats are one direction's counters, in bytes unless named otherwise.
type DirStats struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Bytes and Chunks were read from From.
	Bytes  uint64 `json:"bytes"`
	Chunks uint64 `json:"chunks"`
	// Delivered were written to To (corrupted ones included).
	Delivered uint64 `json:"delivered"`
	// Dropped were not delivered: lost, or read while down. Lost is the
	// part the Loss fault took.
	Dropped uint64 `json:"dropped"`
	Lost    uint64 `json:"lost"`
	// Corrupted were delivered with a bit flipped.
	Corrupted uint64 `json:"corrupted"`
}

// Stats are a link's counters.
type Stats struct {
	// Directions are a to b, then b to a.
	Directions [2]DirStats `json:"directions"`
	// Records is how many capture records were made; Evicted how many of
	// them the bound has since let go.
	Records uint64 `json:"records"`
	Evicted uint64 `json:"evicted"`
}

// Stats are the counters now.
func (u *UART) Stats() Stats {
	var s Stats
	for i, d := range u.dirs {
		s.Directions[i] = DirStats{
			From: d.from, To: d.to,
			Bytes: d.bytes.Load(), Chunks: d.chunks.Load(), Delivered: d.delivered.Load(),
			Dropped: d.dropped.Load(), Lost: d.lost.Load(), Corrupted: d.corrupted.Load(),
		}
	}
	s.Records, s.Evicted = u.cap.counts()
	return s
}

// Capture is the kept records whose Seq is above after (0 for all), oldest
// first. The records share their byte slices with the link: read them,
// do not change them.
func (u *UART) Capture(after uint64) []Record { return u.cap.since(after) }

// Subscribe delivers every record made from now on to the subscription's
// channel, which holds up to buffer records; when the subscriber falls
// further behind, records are skipped for it (counted by Missed) rather
// than slowing the link. The channel is closed by Cancel and when the link
// ends.
func (u *UART) Subscribe(buffer int) *Subscription { return u.cap.subscribe(buffer) }

// chunk is bytes waiting in a delay line.
type chunk struct {
	due  time.Time
	data []byte
}

// direction is one way across the link: a reader that applies the faults,
// and a writer that serves the delay line.
type direction struct {
	u        *UART
	from, to string
	src, dst net.Conn
	rng      *rand.Rand // the reader's only
	line     chan chunk
	// pending counts chunks handed to the writer and not yet written.
	pending atomic.Int64

	bytes, chunks, delivered, dropped, lost, corrupted atomic.Uint64
}

func (d *direction) read() {
	defer d.u.wg.Done()
	buf := make([]byte, readSize)
	for {
		n, err := d.src.Read(buf)
		if n > 0 && !d.pass(buf[:n]) {
			return
		}
		if err != nil {
			d.u.stop(fmt.Errorf("link: reading %s: %w", d.from, err))
			return
		}
	}
}

// pass applies the faults to what was read, records it and hands it on;
// false once the link is stopping.
func (d *direction) pass(b []byte) bool {
	now := time.Now()
	f := d.u.faults.Load()
	data := append([]byte(nil), b...)
	rec := Record{Time: now, From: d.from, To: d.to, Data: data}
	out := data
	switch {
	case f.Down:
		rec.Down, rec.Dropped, out = true, len(data), nil
	case f.Loss > 0 || f.Corrupt > 0:
		out = make([]byte, 0, len(data))
		for _, c := range data {
			if f.Loss > 0 && d.rng.Float64() < f.Loss {
				rec.Lost++
				continue
			}
			if f.Corrupt > 0 && d.rng.Float64() < f.Corrupt {
				c ^= 1 << d.rng.IntN(8)
				rec.Corrupted++
			}
			out = append(out, c)
		}
		rec.Dropped = rec.Lost
		if rec.Lost+rec.Corrupted > 0 {
			rec.Delivered = out
		}
	}
	d.bytes.Add(uint64(len(data)))
	d.chunks.Add(1)
	d.dropped.Add(uint64(rec.Dropped))
	d.lost.Add(uint64(rec.Lost))
	d.corrupted.Add(uint64(rec.Corrupted))
	d.u.cap.add(rec)
	if len(out) == 0 {
		return true
	}
	// The writer has nothing left to write (only this reader adds to
	// pending), so writing here keeps the order and saves a goroutine
	// hand-off per chunk on the common, undelayed path.
	if f.Delay == 0 && d.pending.Load() == 0 {
		return d.deliver(out)
	}
	d.pending.Add(1)
	select {
	case d.line <- chunk{due: now.Add(f.Delay), data: out}:
		return true
	case <-d.u.quit:
		return false
	}
}

func (d *direction) deliver(b []byte) bool {
	n, err := d.dst.Write(b)
	d.delivered.Add(uint64(n))
	if err != nil {
		d.u.stop(fmt.Errorf("link: writing %s: %w", d.to, err))
		return false
	}
	return true
}

func (d *direction) write() {
	defer d.u.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case c := <-d.line:
			if wait := time.Until(c.due); wait > 0 {
				t.Reset(wait)
				select {
				case <-t.C:
				case <-d.u.quit:
					return
				}
			}
			ok := d.deliver(c.data)
			d.pending.Add(-1)
			if !ok {
				return
			}
		case <-d.u.quit:
			return
		}
	}
}
