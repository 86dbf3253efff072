package console

import (
	"context"
	"sync"
)

// Ring is a bounded byte history. Offsets count every byte ever written, so
// they stay valid across wrap-around; the ring keeps the last Size bytes.
type Ring struct {
	mu      sync.Mutex
	buf     []byte
	end     int64         // absolute offset one past the last byte written
	changed chan struct{} // closed and replaced on every write
	closed  bool
}

// NewRing returns a ring that retains the last size bytes.
func NewRing(size int) *Ring {
	if size <= 0 {
		size = 1 << 20
	}
	return &Ring{buf: make([]byte, size), changed: make(chan struct{})}
}

// Write appends p, overwriting the oldest bytes when full. It never blocks on
// readers: a slow reader loses the overwritten bytes and is told so by Read.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	size := len(r.buf)
	if len(p) > size {
		r.end += int64(len(p) - size)
		p = p[len(p)-size:]
	}
	for len(p) > 0 {
		i := int(r.end % int64(size))
		c := copy(r.buf[i:], p)
		p = p[c:]
		r.end += int64(c)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return n, nil
}

// Start is the oldest offset still held.
func (r *Ring) Start() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.start()
}

func (r *Ring) start() int64 {
	if s := r.end - int64(len(r.buf)); s > 0 {
		return s
	}
	return 0
}

// End is the offset one past the newest byte.
func (r *Ring) End() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.end
}

// Read returns up to max bytes from offset. from is where the returned data
// really starts: larger than offset when those bytes were overwritten (a gap
// of from-offset bytes), and next is the offset to read from next time. An
// offset past the end reads nothing and returns next = End.
func (r *Ring) Read(offset int64, max int) (data []byte, from, next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	from = offset
	if s := r.start(); from < s {
		from = s
	}
	if from > r.end {
		from = r.end
	}
	n := r.end - from
	if max > 0 && n > int64(max) {
		n = int64(max)
	}
	data = make([]byte, n)
	size := int64(len(r.buf))
	for i := int64(0); i < n; {
		j := (from + i) % size
		c := copy(data[i:], r.buf[j:])
		i += int64(c)
	}
	return data, from, from + n
}

// Wait blocks until there are bytes at or after offset, the ring is closed,
// or ctx is done. It returns ctx.Err() or ErrClosed in the latter cases.
func (r *Ring) Wait(ctx context.Context, offset int64) error {
	for {
		r.mu.Lock()
		if r.end > offset {
			r.mu.Unlock()
			return nil
		}
		if r.closed {
			r.mu.Unlock()
			return ErrClosed
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close wakes every waiter for good: the session is gone.
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.changed)
	}
}
