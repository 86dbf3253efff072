package host

import (
	"context"
	"errors"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

// watch turns the end of a session's machine into session state, then
// takes the machine out of the slot (unless whoever waited for the record
// did), cleans up after it and prepares the next spare.
func (r *Runner) watch(s *session, in *instance) {
	<-in.m.Done()
	r.record(s, in)
	if in.tape != nil {
		// Before recorded: a power off returns with the recording stored.
		r.storeRecording(s, in)
	}
	close(in.recorded)
	s.mu.Lock()
	r.clear(s, in)
	s.mu.Unlock()
	r.removeDir(in.m)
	r.prepare(s)
}

// outcome is what a machine's end makes of its session.
type outcome struct {
	state  model.State
	reason string
	event  string
	log    []string
}

// classify decides on the exit's kind and code, never on its words: an end
// the runner asked for is "stopped" with its reason, one the OOM killer
// caused is "error" saying so, a firmware status 0 is "stopped" (and, with
// a debugger attached a moment ago, was gdb's kill), a replay that printed
// all its recording printed is "stopped" at the recording's end (replayed
// names the recording), and anything else is "error" with the exit's
// reason and the emulator's log.
func classify(e emulator.Exit, stopping bool, stopReason, oom, debugger, replayed string) outcome {
	switch {
	case stopping:
		return outcome{state: model.StateStopped, reason: stopReason, event: events.TypeSessionStopped}
	case oom != "":
		return outcome{state: model.StateError, reason: oom, event: events.TypeSessionFailed, log: e.Log}
	case replayed != "" && !e.Passed() && e.Kind != emulator.ExitStopped:
		// QEMU 7.2 lets a replayed guest run a little past the recorded
		// power off, and exits 1 when it writes to a UART there (the log
		// has no write left): the replay is over, not broken.
		return outcome{state: model.StateStopped, reason: "the replay reached the end of recording " + replayed,
			event: events.TypeSessionStopped, log: e.Log}
	case e.Passed() && debugger != "":
		return outcome{state: model.StateStopped, reason: "the debugger ended the emulator (gdb kill) from " + debugger, event: events.TypeSessionStopped}
	case e.Passed(), e.Kind == emulator.ExitStopped:
		return outcome{state: model.StateStopped, reason: e.String(), event: events.TypeSessionStopped, log: e.Log}
	}
	return outcome{state: model.StateError, reason: e.String(), event: events.TypeSessionFailed, log: e.Log}
}

// record writes the end of in into the session, unless it is not the
// session's (replaced) or the session moved on. It runs without s.mu, so
// a stop holding the lock can wait for it.
func (r *Runner) record(s *session, in *instance) {
	stopping, silent, stopReason := in.requested()
	if silent {
		r.emulatorEnded(s.id, "", in, "", "the machine was replaced (a snapshot restore)")
		return
	}
	e := in.m.Exit()
	who := ""
	// gdb's kill makes QEMU exit 0 while (or just as) the debugger goes.
	if c, ok := s.gdb.Recent(2 * time.Second); ok {
		who = c.Who
	}
	o := classify(e, stopping, stopReason, r.oomReason(in.m, e), who, r.replayedAll(s, in))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	updated, err := r.state.UpdateSession(ctx, s.id, func(sess *model.Session) error {
		if sess.RunnerID != r.cfg.ID || sess.State != model.StateRunning {
			return errUnchanged
		}
		sess.State, sess.Reason, sess.EmulatorLog = o.state, o.reason, o.log
		sess.Exit = &model.Exit{Kind: string(e.Kind), Code: e.Code, Signal: e.Signal}
		if stopping {
			sess.Exit = &model.Exit{Kind: string(emulator.ExitStopped)}
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, errUnchanged) && !errors.Is(err, state.ErrNotFound) {
			r.log.Error("recording emulator exit", "session", s.id, "err", err)
		}
		r.emulatorEnded(s.id, "", in, "", o.reason)
		return
	}
	r.log.Info("emulator ended", "session", s.id, "state", o.state, "reason", o.reason, "exit", e.Kind)
	r.emulatorEnded(s.id, updated.Tenant, in, o.state, o.reason)
	r.publish(o.event, updated)
}

// replayedAll names the recording in re-ran once the session's console
// holds all the recording printed, and is "" for any other machine or a
// replay that ended short of it (diverged: an error).
func (r *Runner) replayedAll(s *session, in *instance) string {
	if in.replaying == nil {
		return ""
	}
	<-in.pumped // the last bytes are in the ring
	if s.ring.End() < in.replaying.end {
		return ""
	}
	return in.replaying.id
}
