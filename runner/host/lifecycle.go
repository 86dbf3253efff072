package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// instance is a launched machine while it is a session's machine, with
// what its end needs to be recorded. Its watch records the end without the
// session's lock, so whoever holds that lock can wait for the record.
type instance struct {
	m emulator.Machine
	// pumped is closed when the pumps of every port have ended; recorded
	// once watch has written the end into the session.
	pumped, recorded chan struct{}

	mu sync.Mutex
	// stopping marks an end the runner asked for, so it is not an error;
	// reason is what the session then says (the idle timeout), and silent
	// an end that is not the session's (its machine is being replaced).
	stopping, silent bool
	reason           string
	// tape, when set, is the recording the machine makes: stored when it
	// ends. replaying marks a machine re-running a recording, which takes
	// no input.
	tape      *taping
	replaying *replay
}

// replay is the recording a machine re-runs, and where the session's
// console ends once the machine has printed all the recording printed.
type replay struct {
	id  string
	end int64
}

// stop marks the coming end as asked for.
func (in *instance) stop(reason string, silent bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.stopping, in.reason, in.silent = true, reason, silent
}

func (in *instance) requested() (stopping, silent bool, reason string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stopping, in.silent, in.reason
}

// setProc keeps the counter in step with the slot (setSpare likewise for
// spares); s.mu is held.
func (r *Runner) setProc(s *session, in *instance) {
	if d := delta(s.proc != nil, in != nil); d != 0 {
		r.active.Add(d)
		// The registration says how many run: placement (a system's all
		// nodes at once) reads it, so it is refreshed now, not at the
		// next heartbeat.
		select {
		case r.loadChanged <- struct{}{}:
		default:
		}
	}
	s.proc = in
}

func delta(had, has bool) int32 {
	switch {
	case had && !has:
		return -1
	case !had && has:
		return 1
	}
	return 0
}

// Start powers a session's machine on. ctx bounds the start-up only.
func (r *Runner) Start(ctx context.Context, id string, req runnerapi.StartRequest) (runnerapi.Status, error) {
	if req.Machine == "" {
		return runnerapi.Status{}, httpapi.BadRequest("machine is required")
	}
	if req.Deterministic && req.VirtualTime {
		// One instruction counter, two ways to run it: sleep off (idle time
		// skipped) or held to the host's time.
		return runnerapi.Status{}, httpapi.BadRequest("deterministic and virtual_time do not combine: a deterministic machine skips idle time, a virtual-time one keeps it in step with the host; ask for one of them")
	}
	if req.Backend != "" && req.Backend != r.offered.Name {
		return runnerapi.Status{}, httpapi.Unprocessable("backend %q is not offered by this runner (it runs %s)", req.Backend, r.offered.Name)
	}
	if _, err := r.boardOf(req.Machine); err != nil {
		return runnerapi.Status{}, err
	}
	s, err := r.lockedSlot(id)
	if err != nil {
		return runnerapi.Status{}, err
	}
	defer s.mu.Unlock()
	return r.startLocked(ctx, s, req)
}

// startLocked is Start once the slot is held. s.mu is held.
func (r *Runner) startLocked(ctx context.Context, s *session, req runnerapi.StartRequest) (runnerapi.Status, error) {
	if r.live(s) != nil {
		if !req.Restart {
			return runnerapi.Status{}, httpapi.Conflict("session %s is already running; power it off first or reset it", s.id)
		}
		r.stopLocked(s, "")
	}
	if r.running() >= r.cfg.Capacity {
		return runnerapi.Status{}, httpapi.Errorf(429, "capacity", "runner %s is full (%d emulators)", r.cfg.ID, r.cfg.Capacity)
	}
	if req.Limits != nil {
		s.limits = req.Limits
	}
	lim, err := r.limitsFor(s, req)
	if err != nil {
		return runnerapi.Status{}, err
	}
	t0 := time.Now()
	var m emulator.Machine
	if !special(req) {
		m = r.take(&s.cold, imageKey(req))
	}
	if t, ok := r.trackedOf(m); m != nil && (!ok || t.limits != lim) {
		// Prelaunched under other limits: not this machine.
		r.discard(m)
		m = nil
	}
	if m == nil {
		if m, err = r.launch(ctx, s, req, false); err != nil {
			return runnerapi.Status{}, err
		}
	}
	last := req
	last.Halted, last.Restart, last.Coverage = false, false, false
	// Spares are plain machines: none records or replays another run.
	last.Record, last.Replay = nil, nil
	r.setLast(s, &last)
	if req.Replay != nil {
		s.replaying = &replay{id: req.Replay.ID, end: s.ring.End() + req.Replay.ConsoleBytes}
	}
	if req.Record != nil {
		s.tape = &taping{rec: *req.Record, dir: filepath.Join(m.Dir(), recordingDir), from: s.ring.End(), began: time.Now()}
	}
	if req.Coverage && r.coverage && !s.cov.on {
		// From the first instruction: the new machine has counted nothing.
		s.cov = covState{on: true, started: true, acc: s.cov.acc}
	}
	t1 := time.Now()
	from := s.ring.End()
	st, err := r.activate(ctx, s, m, req.Halted)
	if err != nil || !st.Running {
		return st, err
	}
	r.log.Info("emulator started", "session", s.id, "machine", req.Machine, "pid", m.Pid(), "program", req.Program.ID,
		"launch_ms", ms(t1.Sub(t0)), "run_ms", ms(time.Since(t1)))
	if !req.Halted && r.crashedAtBoot(ctx, s, s.proc, from) {
		return r.status(s), nil
	}
	return st, nil
}

// setLast records what the session runs, and so which ports it has. s.mu
// is held.
func (r *Runner) setLast(s *session, req *runnerapi.StartRequest) {
	s.last = req
	if b, err := r.boardOf(req.Machine); err == nil {
		s.ports.setBoard(b)
	}
}

// bootSettle bounds how long power on waits for a booting guest's first
// UART output. A guest that crashes the emulator before any (an image
// built for another board locks the CPU up within a few milliseconds) is
// answered with its error instead of "running"; a guest that prints at
// boot costs nothing, and only one silent at boot waits it out.
const bootSettle = 25 * time.Millisecond

// crashedAtBoot waits up to bootSettle for the guest's first UART output
// after from, and reports whether the machine ended before it; its end is
// then recorded. s.mu is held.
func (r *Runner) crashedAtBoot(ctx context.Context, s *session, in *instance, from int64) bool {
	ctx, cancel := context.WithTimeout(ctx, bootSettle)
	defer cancel()
	go func() {
		select {
		case <-in.m.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = s.ring.Wait(ctx, from) // output, the machine's end or the bound: all mean stop waiting
	select {
	case <-in.m.Done():
		r.settle(s, in)
		return true
	default:
		return false
	}
}

// activate makes a paused machine the session's: it pumps its ports into
// the rings, records the running state, lets the guest run (unless halted)
// and watches for its end. s.mu is held.
func (r *Runner) activate(ctx context.Context, s *session, m emulator.Machine, halted bool) (runnerapi.Status, error) {
	in := &instance{m: m, pumped: make(chan struct{}), recorded: make(chan struct{}), tape: s.tape, replaying: s.replaying}
	s.tape, s.replaying = nil, nil
	r.setProc(s, in)
	s.touch()
	r.pumpPorts(s, in)
	// Watched from now on, so even a failure below is recorded and cleaned
	// up.
	go r.watch(s, in)
	s.gdb.SetStub(m.DebugStub())

	now := time.Now().UTC()
	updated, err := r.state.UpdateSession(ctx, s.id, func(sess *model.Session) error {
		sess.State, sess.Reason, sess.StartedAt, sess.RunnerID = model.StateRunning, "", &now, r.cfg.ID
		sess.EmulatorLog, sess.Exit = nil, nil
		return nil
	})
	if err != nil {
		r.stopLocked(s, "")
		if errors.Is(err, state.ErrNotFound) {
			return runnerapi.Status{}, httpapi.NotFound("session %s not found", s.id)
		}
		return runnerapi.Status{}, err
	}
	r.emulatorStarted(updated, m, halted)
	if !halted {
		if err := m.Resume(ctx); err != nil {
			if r.died(s, in, err) {
				// The guest crashed the emulator at once: not a failure to
				// start, the session is in error and says why.
				return r.status(s), nil
			}
			r.stopLocked(s, "")
			return runnerapi.Status{}, fmt.Errorf("start session %s: resume: %w", s.id, err)
		}
	}
	r.publish(events.TypeSessionStarted, updated)
	return r.status(s), nil
}

// died reports whether err, from a call to in's machine, is the machine
// ending (a guest that locks the CPU up makes QEMU abort while it answers a
// resume or a reset) and then waits until its end is recorded, so the
// caller answers with the session's error. s.mu is held.
func (r *Runner) died(s *session, in *instance, err error) bool {
	if !errors.Is(err, emulator.ErrExited) {
		return false
	}
	t := time.NewTimer(r.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-in.m.Done():
	case <-t.C:
		return false
	}
	r.settle(s, in)
	return true
}

// settle waits until watch has recorded the end of in (it does so without
// s.mu) and takes in out of the slot. s.mu is held.
func (r *Runner) settle(s *session, in *instance) {
	<-in.recorded
	r.clear(s, in)
}

// live is the session's machine unless it has ended: one that has is
// settled first, so a caller that saw its end recorded finds the slot free.
// s.mu is held.
func (r *Runner) live(s *session) *instance {
	if in := s.proc; in != nil {
		select {
		case <-in.m.Done():
			r.settle(s, in)
		default:
		}
	}
	return s.proc
}

// clear takes an ended machine out of the slot, once: watch or whoever
// waited for its end, whichever holds s.mu first. s.mu is held.
func (r *Runner) clear(s *session, in *instance) {
	if s.proc != in {
		return
	}
	r.harvest(s, in.m)
	r.setProc(s, nil)
	s.gdb.SetStub("")
}

// Stop powers a session off. Stopping a stopped session is a no-op.
func (r *Runner) Stop(id string) error {
	s, err := r.slot(id, false)
	if err != nil {
		return nil
	}
	r.stop(s)
	return nil
}

func (r *Runner) stop(s *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.stopLocked(s, "")
}

// stopLocked stops the machine and waits until the pumps have drained its
// last output and watch has recorded the end with reason, so the caller
// sees the final state. s.mu is held throughout: watch does not need it to
// record.
func (r *Runner) stopLocked(s *session, reason string) {
	in := s.proc
	if in == nil {
		return
	}
	in.stop(reason, false)
	s.gdb.SetStub("")
	in.m.Stop(r.cfg.StopGrace)
	<-in.pumped
	r.clear(s, in)
	<-in.recorded
}

// Reset resets a running machine (the firmware is reloaded). A board whose
// backend cannot reset it in place is started afresh with the same image,
// as a power cycle that keeps the console.
func (r *Runner) Reset(ctx context.Context, id string) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; power it on first", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.proc
	if in == nil {
		return httpapi.Conflict("session %s is not running; power it on first", id)
	}
	err = in.m.Reset(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, emulator.ErrUnsupported) && s.last != nil:
		req := *s.last
		req.Restart = true
		_, err := r.startLocked(ctx, s, req)
		return err
	case r.died(s, in, err):
		return nil
	}
	return fmt.Errorf("reset session %s: %w", id, err)
}

// Resume lets a machine started halted (StartRequest.Halted) run, as
// activate does for one that is not; resuming one that runs is harmless
// (so is one a debugger stopped, which then runs under the debugger's
// feet: the caller's choice). A halted start skipped crashedAtBoot, and so
// does this: a guest that crashes the emulator at once is answered as
// activate answers it (the session is in error and says why), and one that
// crashes later ends as any running machine does.
func (r *Runner) Resume(ctx context.Context, id string) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; power it on (halted) first", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := r.live(s)
	if in == nil {
		return httpapi.Conflict("session %s is not running; power it on (halted) first", id)
	}
	if err := in.m.Resume(ctx); err != nil {
		if r.died(s, in, err) {
			return nil
		}
		return fmt.Errorf("resume session %s: %w", id, err)
	}
	return nil
}

// Pause stops a running machine's guest where it is, until Resume: the
// nodes of a system are paused together before their snapshots, so each
// is saved at the same point of the others (a snapshot of a paused guest
// leaves it paused). Pausing a paused guest is harmless.
func (r *Runner) Pause(ctx context.Context, id string) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; only a running machine can be paused", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := r.live(s)
	if in == nil {
		return httpapi.Conflict("session %s is not running; only a running machine can be paused", id)
	}
	if err := in.m.Pause(ctx); err != nil {
		if r.died(s, in, err) {
			return nil
		}
		return fmt.Errorf("pause session %s: %w", id, err)
	}
	return nil
}

// Delete stops the machine and drops the console history. The id is
// remembered, so a request racing the delete cannot bring the slot back.
func (r *Runner) Delete(id string) error {
	r.mu.Lock()
	now := time.Now()
	r.deleted[id] = now
	for k, t := range r.deleted {
		if now.Sub(t) > time.Hour {
			delete(r.deleted, k)
		}
	}
	s, ok := r.sessions[id]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	// Under one hold of s.mu, so no power on slips in between the stop and
	// the mark.
	s.mu.Lock()
	s.deleted = true
	r.stopLocked(s, "")
	r.dropSpares(s)
	s.mu.Unlock()
	s.gdb.Close()
	s.ports.close()
	r.mu.Lock()
	delete(r.sessions, id)
	r.mu.Unlock()
	r.budget.forget(id)
	return nil
}

// launch cold-starts a paused machine for req in a fresh instance
// directory, inside a cgroup with the session's limits.
func (r *Runner) launch(ctx context.Context, s *session, req runnerapi.StartRequest, incoming bool) (emulator.Machine, error) {
	b, err := r.boardOf(req.Machine)
	if err != nil {
		return nil, err
	}
	var nic *emulator.NIC
	if req.NIC != nil {
		if !b.Ethernet {
			return nil, httpapi.Unprocessable("board %s has no NIC to link", b.Name)
		}
		if !emulator.ValidMAC(req.NIC.MAC) {
			return nil, httpapi.BadRequest("nic.mac %q is not a unicast MAC in lowercase hex (e.g. 02:00:00:00:00:01)", req.NIC.MAC)
		}
		nic = &emulator.NIC{MAC: req.NIC.MAC}
	}
	path, err := r.fetch(ctx, req.Program)
	if err != nil {
		return nil, err
	}
	lim, err := r.limitsFor(s, req)
	if err != nil {
		return nil, err
	}
	s.gen++
	dir := filepath.Join(r.cfg.SocketDir, fmt.Sprintf("%s-%d", s.id, s.gen))
	record, replay, err := r.recordingDirs(ctx, req, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	g, err := r.group(s, lim)
	if err != nil {
		return nil, err
	}
	m, err := r.backend.Launch(ctx, emulator.Spec{
		Board:    b,
		Firmware: emulator.Firmware{Path: path, Format: req.Program.Format, LoadAddress: req.Program.LoadAddress},
		Dir:      dir,
		Incoming: incoming,
		Record:   record,
		Replay:   replay,
		// Always counted (a few percent of run time), so coverage can
		// start on a running machine: an emulator cannot begin counting
		// later.
		Coverage: counts(b),
		// The session's, so its spares and restarts run on the same clock.
		Deterministic: req.Deterministic,
		VirtualTime:   req.VirtualTime,
		NIC:           nic,
		// Into the group before the guest runs a single instruction.
		Started: g.Add,
	})
	if err != nil {
		oom := g.OOMKilled()
		g.Remove()
		if oom {
			return nil, httpapi.Unprocessable("the session's memory limit (%d MB, limits.memory_mb) is below what the emulator needs: the kernel's OOM killer ended it during start-up", lim.MemoryBytes>>20)
		}
		return nil, fmt.Errorf("start session %s: %w", s.id, err)
	}
	r.track(m, tracked{group: g, limits: lim})
	return m, nil
}

// discard kills a machine that is nobody's (a spare that does not serve,
// a restore target that failed) and cleans up after it.
func (r *Runner) discard(m emulator.Machine) {
	m.Kill()
	<-m.Done()
	r.removeDir(m)
}

// removeDir cleans up after an exited emulator: its instance directory
// and its cgroup.
func (r *Runner) removeDir(m emulator.Machine) {
	os.RemoveAll(m.Dir())
	r.retire(m)
}
