package host

import (
	"context"
	"sync"
	"time"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// hostClock is a barrier (vtime.go) running over a system's nodes, from
// its put until its delete or a node's end. Its goroutine lives with the
// runner, not with the request that put it.
type hostClock struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	state  runnerapi.Clock
}

func (c *hostClock) status() runnerapi.Clock {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	st.Sessions = append([]string(nil), st.Sessions...)
	return st
}

func (c *hostClock) seen(v VirtualTimeStats) {
	c.mu.Lock()
	c.state.Polls, c.state.MaxSpreadMS, c.state.Holds, c.state.HeldMS = v.Polls, ms(v.MaxSpread), v.Holds, ms(v.Held)
	c.mu.Unlock()
}

// stop ends the barrier and waits until it has resumed the nodes it held.
func (c *hostClock) stop() {
	c.cancel()
	<-c.done
}

// PutClock starts a barrier over the sessions' virtual clocks, replacing
// the one under id if any. Every session must run on virtual time now.
func (r *Runner) PutClock(id string, req runnerapi.ClockRequest) (runnerapi.Clock, error) {
	if !model.ValidID(id) {
		return runnerapi.Clock{}, httpapi.BadRequest("clock id %q is not 16 lowercase hex digits", id)
	}
	quantum := VirtualTimeQuantum
	if req.Quantum != "" {
		d, err := time.ParseDuration(req.Quantum)
		if err != nil || d < time.Millisecond || d > time.Second {
			return runnerapi.Clock{}, httpapi.BadRequest("quantum %q is not a duration from 1ms to 1s", req.Quantum)
		}
		quantum = d
	}
	r.DeleteClock(id)
	b, err := r.newBarrier(req.Sessions, quantum)
	if err != nil {
		return runnerapi.Clock{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &hostClock{cancel: cancel, done: make(chan struct{}), state: runnerapi.Clock{
		ID: id, Sessions: append([]string(nil), req.Sessions...), Quantum: quantum.String(), Running: true,
	}}
	r.mu.Lock()
	if r.clocks == nil {
		r.clocks = map[string]*hostClock{}
	}
	r.clocks[id] = c
	r.mu.Unlock()
	go func() {
		defer close(c.done)
		st, err := b.run(ctx, c.seen)
		c.seen(st)
		c.mu.Lock()
		c.state.Running = false
		if err != nil {
			c.state.Reason = err.Error()
		}
		c.mu.Unlock()
		r.log.Info("virtual clock ended", "clock", id, "polls", st.Polls, "max_spread_ms", ms(st.MaxSpread), "holds", st.Holds, "held_ms", ms(st.Held), "err", err)
	}()
	r.log.Info("virtual clock started", "clock", id, "sessions", req.Sessions, "quantum", quantum)
	return c.status(), nil
}

// GetClock is the barrier's state, running or ended.
func (r *Runner) GetClock(id string) (runnerapi.Clock, error) {
	r.mu.Lock()
	c := r.clocks[id]
	r.mu.Unlock()
	if c == nil {
		return runnerapi.Clock{}, httpapi.NotFound("clock %s not found", id)
	}
	return c.status(), nil
}

// DeleteClock stops the barrier, resuming the nodes it held, and answers
// its last state; an unknown id is a 404.
func (r *Runner) DeleteClock(id string) (runnerapi.Clock, error) {
	r.mu.Lock()
	c := r.clocks[id]
	delete(r.clocks, id)
	r.mu.Unlock()
	if c == nil {
		return runnerapi.Clock{}, httpapi.NotFound("clock %s not found", id)
	}
	c.stop()
	return c.status(), nil
}

// stopClocks ends every barrier (the runner shuts down).
func (r *Runner) stopClocks() {
	r.mu.Lock()
	all := r.clocks
	r.clocks = nil
	r.mu.Unlock()
	for _, c := range all {
		c.stop()
	}
}
