package link

import (
	"sync"
	"sync/atomic"
	"time"
)

// Record is one chunk read from one end of a link, with what the faults
// did to it. It marshals to JSON as it is (byte slices as base64, because
// a UART carries any byte).
type Record struct {
	// Seq numbers the link's records from 1, both directions together, in
	// the order they were captured.
	Seq uint64 `json:"seq"`
	// Time is when the chunk was read from From.
	Time time.Time `json:"time"`
	From string    `json:"from"`
	To   string    `json:"to"`
	// Data are the bytes as From sent them.
	Data []byte `json:"data"`
	// Delivered are the bytes written to To, set only when the faults
	// changed them (lost or corrupted bytes); otherwise they are Data, or
	// nothing when Dropped is all of Data.
	Delivered []byte `json:"delivered,omitempty"`
	// Down: the link was down and dropped the chunk.
	Down bool `json:"down,omitempty"`
	// Dropped bytes of Data were not delivered; Lost of them by the Loss
	// fault. Corrupted delivered bytes had a bit flipped.
	Dropped   int `json:"dropped,omitempty"`
	Lost      int `json:"lost,omitempty"`
	Corrupted int `json:"corrupted,omitempty"`
}

// recordCost is what a record counts against the capture bound besides
// its bytes, so a flood of one-byte chunks is bounded too.
const recordCost = 96

func (r Record) cost() int { return recordCost + len(r.Data) + len(r.Delivered) }

// capture keeps the newest records within a byte bound and hands every
// record to the subscribers.
type capture struct {
	mu      sync.Mutex
	limit   int // < 0: keep none
	recs    []Record
	size    int
	seq     uint64
	evicted uint64
	subs    map[*Subscription]struct{}
	closed  bool
}

func newCapture(limit int) *capture {
	return &capture{limit: limit, subs: map[*Subscription]struct{}{}}
}

func (c *capture) add(r Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	r.Seq = c.seq
	for s := range c.subs {
		select {
		case s.c <- r:
		default:
			s.missed.Add(1)
		}
	}
	if c.limit < 0 {
		c.evicted++
		return
	}
	c.recs = append(c.recs, r)
	c.size += r.cost()
	drop := 0
	for c.size > c.limit && drop < len(c.recs) {
		c.size -= c.recs[drop].cost()
		c.recs[drop] = Record{} // let its bytes go
		drop++
	}
	c.recs = c.recs[drop:]
	c.evicted += uint64(drop)
}

func (c *capture) since(after uint64) []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Seqs are consecutive, so the first wanted record's index is known.
	i := 0
	if n := len(c.recs); n > 0 && after >= c.recs[0].Seq {
		i = min(int(after-c.recs[0].Seq)+1, n)
	}
	return append([]Record(nil), c.recs[i:]...)
}

func (c *capture) counts() (records, evicted uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq, c.evicted
}

func (c *capture) subscribe(buffer int) *Subscription {
	ch := make(chan Record, max(buffer, 0))
	s := &Subscription{C: ch, c: ch, capture: c}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		close(ch)
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// close ends every subscription: the link makes no more records.
func (c *capture) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for s := range c.subs {
		close(s.c)
		delete(c.subs, s)
	}
}

// Subscription is a live feed of a link's records.
type Subscription struct {
	// C receives the records; it is closed by Cancel or the link's end.
	C       <-chan Record
	c       chan Record
	missed  atomic.Uint64
	capture *capture
}

// Missed is how many records were skipped because C was full.
func (s *Subscription) Missed() uint64 { return s.missed.Load() }

// Cancel ends the subscription and closes C; calling it again, or after
// the link ended, is harmless.
func (s *Subscription) Cancel() {
	c := s.capture
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[s]; ok {
		delete(c.subs, s)
		close(s.c)
	}
}
