package host

import (
	"context"
	"fmt"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Virtual time (StartRequest.VirtualTime) runs each guest on QEMU's
// instruction counter held to the host's clock (QEMU's align): a guest
// never runs ahead of the host time it has had, but one can fall behind:
// a busy guest the host cannot keep up with, and even an idle one, which
// loses a little at each wake-up (about 15 ms per second with a 10 ms
// tick on QEMU 7.2). Nodes started together therefore drift apart without
// bound. SyncVirtualTime closes that: it holds (pauses) any node whose
// clock is more than a quantum ahead of the slowest one's until the
// others have caught up, so the system advances at its slowest node's
// pace.

// virtualClock is a machine on the instruction counter that says how far
// its guest clock is behind the host time it has spent running since its
// first resume (qemu's VirtualLag).
type virtualClock interface {
	VirtualLag(ctx context.Context) (time.Duration, error)
}

// VirtualTimeQuantum is the default bound SyncVirtualTime keeps the
// nodes' clocks within: coarse enough that the barrier rarely acts on
// nodes that keep up, fine enough for timeouts of tens of milliseconds.
const VirtualTimeQuantum = 20 * time.Millisecond

// VirtualTimeStats is what a SyncVirtualTime run saw.
type VirtualTimeStats struct {
	// Polls counts the readings of every node's clock.
	Polls int
	// MaxSpread is the largest distance between the most advanced and the
	// least advanced guest clock at one reading.
	MaxSpread time.Duration
	// Holds counts the times a node was paused for the others; Held is
	// the host time nodes spent so, summed over nodes: what the bound
	// cost.
	Holds int
	Held  time.Duration
}

// pauser is the part of emulator.Machine the barrier drives.
type pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

var _ pauser = emulator.Machine(nil)

// vnode is one machine the barrier keeps in step.
type vnode struct {
	id string
	m  pauser
	c  virtualClock
	// held is the host time the barrier has kept it paused, up to
	// heldSince (zero while it runs). Its guest clock stood still then,
	// and so did the host time QEMU counts it as having run.
	held      time.Duration
	heldSince time.Time
}

// behind is how far the node's guest clock is behind the host time since
// the nodes were resumed together: what QEMU says it lags its own running
// time, plus the time the barrier kept it from running.
func (n *vnode) behind(lag time.Duration, now time.Time) time.Duration {
	b := lag + n.held
	if !n.heldSince.IsZero() {
		b += now.Sub(n.heldSince)
	}
	return b
}

// decide is the barrier's rule over the nodes' distances behind: a
// running node more than quantum ahead of the slowest node is held; a
// held node is let go once no running node is behind it. The slowest
// node always runs, so the system always advances.
func decide(behind []time.Duration, held []bool, quantum time.Duration) (hold, release []int) {
	slowest, slowestRunning, running := behind[0], time.Duration(0), false
	for i, b := range behind {
		slowest = max(slowest, b)
		if !held[i] && (!running || b > slowestRunning) {
			slowestRunning, running = b, true
		}
	}
	for i, b := range behind {
		switch {
		case !held[i] && slowest-b > quantum:
			hold = append(hold, i)
		case held[i] && (!running || b >= slowestRunning):
			release = append(release, i)
		}
	}
	return hold, release
}

// barrier holds nodes' clocks within quantum of each other.
type barrier struct {
	nodes   []*vnode
	quantum time.Duration
	now     func() time.Time
	stats   VirtualTimeStats
}

// step reads every node's clock once and holds or lets go nodes as
// decide says.
func (b *barrier) step(ctx context.Context) error {
	behind := make([]time.Duration, len(b.nodes))
	held := make([]bool, len(b.nodes))
	for i, n := range b.nodes {
		lag, err := n.c.VirtualLag(ctx)
		if err != nil {
			return fmt.Errorf("virtual time: session %s: %w", n.id, err)
		}
		behind[i], held[i] = n.behind(lag, b.now()), !n.heldSince.IsZero()
	}
	b.stats.Polls++
	b.stats.MaxSpread = max(b.stats.MaxSpread, spread(behind))
	hold, release := decide(behind, held, b.quantum)
	for _, i := range hold {
		n := b.nodes[i]
		if err := n.m.Pause(ctx); err != nil {
			return fmt.Errorf("virtual time: holding session %s: %w", n.id, err)
		}
		n.heldSince = b.now()
		b.stats.Holds++
	}
	for _, i := range release {
		if err := b.release(ctx, b.nodes[i]); err != nil {
			return err
		}
	}
	return nil
}

// release resumes a held node and counts the time it was held up to the
// moment QEMU answered (its clock runs again from then).
func (b *barrier) release(ctx context.Context, n *vnode) error {
	if err := n.m.Resume(ctx); err != nil {
		return fmt.Errorf("virtual time: releasing session %s: %w", n.id, err)
	}
	d := b.now().Sub(n.heldSince)
	n.held += d
	n.heldSince = time.Time{}
	b.stats.Held += d
	return nil
}

// releaseAll lets every held node go, when the barrier ends.
func (b *barrier) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range b.nodes {
		if !n.heldSince.IsZero() {
			// A node that has exited cannot be resumed; nothing is lost.
			_ = b.release(ctx, n)
		}
	}
}

func spread(d []time.Duration) time.Duration {
	lo, hi := d[0], d[0]
	for _, v := range d {
		lo, hi = min(lo, v), max(hi, v)
	}
	return hi - lo
}

// SyncVirtualTime keeps the guest clocks of the sessions ids, running and
// started with VirtualTime, within quantum (VirtualTimeQuantum when 0)
// of each other, reading them every quantum/4, until ctx ends or one of
// the machines ends; it then resumes every node it holds and says what it
// saw. The nodes must have been resumed together (a system's start), as
// their clocks are compared against the same host time; a node resumed
// later reads as that much ahead. The caller cancels it before it pauses
// the nodes itself (a system snapshot: otherwise the barrier would resume
// a node it held) and runs it again after it resumes them.
func (r *Runner) SyncVirtualTime(ctx context.Context, ids []string, quantum time.Duration) (VirtualTimeStats, error) {
	b, err := r.newBarrier(ids, quantum)
	if err != nil {
		return VirtualTimeStats{}, err
	}
	return b.run(ctx, nil)
}

// newBarrier checks that every session runs on virtual time and makes
// the barrier over them.
func (r *Runner) newBarrier(ids []string, quantum time.Duration) (*barrier, error) {
	if len(ids) < 2 {
		return nil, httpapi.BadRequest("virtual time is kept between two nodes or more, got %d", len(ids))
	}
	if quantum <= 0 {
		quantum = VirtualTimeQuantum
	}
	b := &barrier{quantum: quantum, now: time.Now}
	for _, id := range ids {
		n, err := r.virtualNode(id)
		if err != nil {
			return nil, err
		}
		b.nodes = append(b.nodes, n)
	}
	return b, nil
}

// run steps the barrier until ctx ends or a node's clock cannot be read
// (its machine ended), handing seen the stats after every step.
func (b *barrier) run(ctx context.Context, seen func(VirtualTimeStats)) (VirtualTimeStats, error) {
	defer b.releaseAll()
	tick := time.NewTicker(max(b.quantum/4, time.Millisecond))
	defer tick.Stop()
	for {
		if err := b.step(ctx); err != nil {
			if ctx.Err() != nil {
				return b.stats, nil
			}
			return b.stats, err
		}
		if seen != nil {
			seen(b.stats)
		}
		select {
		case <-ctx.Done():
			return b.stats, nil
		case <-tick.C:
		}
	}
}

// virtualNode is session id's running machine, if it runs on virtual
// time.
func (r *Runner) virtualNode(id string) (*vnode, error) {
	s, err := r.slot(id, false)
	if err != nil {
		return nil, httpapi.Conflict("session %s is not running", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := r.live(s)
	if in == nil {
		return nil, httpapi.Conflict("session %s is not running", id)
	}
	c, ok := in.m.(virtualClock)
	if !ok || s.last == nil || !s.last.VirtualTime {
		return nil, httpapi.Unprocessable("session %s does not run on virtual time (start it with virtual_time)", id)
	}
	return &vnode{id: id, m: in.m, c: c}, nil
}
