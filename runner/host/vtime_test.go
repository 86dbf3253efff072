package host

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/runnerapi"
)

// The rule: a running node more than a quantum ahead of the slowest is
// held; a held node goes once no running node is behind it; the slowest
// always runs.
func TestDecideVirtualTime(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	q := 20 * time.Millisecond
	for _, tc := range []struct {
		name          string
		behind        []time.Duration
		held          []bool
		hold, release []int
	}{
		{"in step", ms(0, 20), []bool{false, false}, nil, nil},
		{"one ahead", ms(0, 21), []bool{false, false}, []int{0}, nil},
		{"two ahead of a third", ms(0, 5, 40), []bool{false, false, false}, []int{0, 1}, nil},
		{"held, still ahead", ms(10, 21), []bool{true, false}, nil, nil},
		{"held, caught up", ms(21, 21), []bool{true, false}, nil, []int{0}},
		{"held is the slowest", ms(30, 21), []bool{true, false}, nil, []int{0}},
		{"all held", ms(1, 2), []bool{true, true}, nil, []int{0, 1}},
	} {
		hold, release := decide(tc.behind, tc.held, q)
		if !slices.Equal(hold, tc.hold) || !slices.Equal(release, tc.release) {
			t.Errorf("%s: hold %v release %v, want %v %v", tc.name, hold, release, tc.hold, tc.release)
		}
	}
}

// simNode is a guest whose clock advances rate times as fast as the host
// time it runs (below 1: the host cannot keep up), on a simulated host
// clock; it answers its lag as QEMU's "info jit" does.
type simNode struct {
	now     *time.Time
	rate    float64
	paused  bool
	since   time.Time // of the last update
	running time.Duration
	pauses  int
}

func (n *simNode) update() {
	if !n.paused {
		n.running += n.now.Sub(n.since)
	}
	n.since = *n.now
}

func (n *simNode) guest() time.Duration {
	n.update()
	return time.Duration(float64(n.running) * n.rate)
}

func (n *simNode) VirtualLag(context.Context) (time.Duration, error) {
	return n.running - n.guest(), nil
}

func (n *simNode) Pause(context.Context) error {
	n.update()
	n.paused = true
	n.pauses++
	return nil
}

func (n *simNode) Resume(context.Context) error {
	n.update()
	n.paused = false
	return nil
}

// Three nodes whose guests run at 100%, 90% and 97% of host speed: left
// alone they are 2 s apart after 20 s; the barrier keeps them within its
// quantum (plus what one poll lets them drift) at every poll, and never
// holds the slowest, so the system advances at its pace.
func TestBarrierKeepsClocksTogether(t *testing.T) {
	now := time.Unix(0, 0)
	sims := []*simNode{{rate: 1}, {rate: 0.9}, {rate: 0.97}}
	b := &barrier{quantum: 20 * time.Millisecond, now: func() time.Time { return now }}
	for i, s := range sims {
		s.now, s.since = &now, now
		b.nodes = append(b.nodes, &vnode{id: string(rune('a' + i)), m: s, c: s})
	}
	const poll = 5 * time.Millisecond
	for range 4000 {
		now = now.Add(poll)
		if err := b.step(t.Context()); err != nil {
			t.Fatal(err)
		}
		var g []time.Duration
		for _, s := range sims {
			g = append(g, s.guest())
		}
		if d := slices.Max(g) - slices.Min(g); d > b.quantum+poll {
			t.Fatalf("at %v the guest clocks %v are %v apart", now.Sub(time.Unix(0, 0)), g, d)
		}
	}
	if sims[1].pauses != 0 || sims[0].pauses == 0 || sims[2].pauses == 0 {
		t.Errorf("pauses %d %d %d: only the faster nodes should wait", sims[0].pauses, sims[1].pauses, sims[2].pauses)
	}
	if g := sims[1].guest(); g != 18*time.Second {
		t.Errorf("the slowest node's guest reached %v, want 18s (never held)", g)
	}
	if b.stats.Holds == 0 || b.stats.MaxSpread > b.quantum+poll || b.stats.Polls != 4000 {
		t.Errorf("stats %+v", b.stats)
	}
	b.releaseAll()
	for i, s := range sims {
		if s.paused {
			t.Errorf("node %d still held after the barrier ended", i)
		}
	}
}

// The clocks API refuses what it cannot keep together, each with its
// status, and knows no clock it was not given.
func TestClockRefusals(t *testing.T) {
	g := newRig(t, nil)
	id := "00000000000000c1"
	for _, s := range []string{"a", "b"} {
		g.session(t, s)
		g.start(t, s, "netduino2")
	}
	for _, c := range []struct {
		name   string
		id     string
		req    runnerapi.ClockRequest
		status int
	}{
		{"bad id", "x", runnerapi.ClockRequest{Sessions: []string{"a", "b"}}, http.StatusBadRequest},
		{"bad quantum", id, runnerapi.ClockRequest{Sessions: []string{"a", "b"}, Quantum: "1h"}, http.StatusBadRequest},
		{"one node", id, runnerapi.ClockRequest{Sessions: []string{"a"}}, http.StatusBadRequest},
		{"a node not running", id, runnerapi.ClockRequest{Sessions: []string{"nobody", "a"}}, http.StatusConflict},
		{"nodes not on virtual time", id, runnerapi.ClockRequest{Sessions: []string{"a", "b"}}, http.StatusUnprocessableEntity},
	} {
		if _, err := g.r.PutClock(c.id, c.req); !isStatus(err, c.status) {
			t.Errorf("%s: %v, want %d", c.name, err, c.status)
		}
	}
	if _, err := g.r.GetClock(id); !isStatus(err, http.StatusNotFound) {
		t.Errorf("get a refused clock: %v", err)
	}
	if _, err := g.r.DeleteClock(id); !isStatus(err, http.StatusNotFound) {
		t.Errorf("delete a refused clock: %v", err)
	}
}
