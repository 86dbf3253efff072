package host

import (
	"context"
	"testing"
)

// icounts answers a fixed sequence of instruction counts, then its last.
type icounts struct {
	seq   []int64
	calls int
}

func (c *icounts) Instructions(context.Context) (int64, error) {
	n := c.seq[min(c.calls, len(c.seq)-1)]
	c.calls++
	return n, nil
}

// The guest is asleep once its count stands still; after a byte, only
// once it has moved (the byte woke it) and stood still again.
func TestAwaitAsleep(t *testing.T) {
	running := &icounts{seq: []int64{5, 6, 7, 7, 7, 8}}
	if n := awaitAsleep(context.Background(), running, -1); n != 7 || running.calls != 5 {
		t.Errorf("asleep at %d after %d readings; want 7 after 5", n, running.calls)
	}
	// Not yet woken by the byte: the count before it does not count as
	// asleep, however long it stands.
	woken := &icounts{seq: []int64{7, 7, 7, 7, 9, 12, 12, 12}}
	if n := awaitAsleep(context.Background(), woken, 7); n != 12 || woken.calls != 8 {
		t.Errorf("asleep at %d after %d readings; want 12 after 8", n, woken.calls)
	}
}
