package host

import (
	"context"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/shared/model"
)

// The runner's log lines of a session (its emulator started or ended, a
// debugger attached or detached) are also events, so a client of the
// event stream sees them beside the session's state changes.

// logEvent publishes one for the session's tenant; "" looks the tenant up,
// and a session that is gone gets none (its events would reach no one
// they belong to).
func (r *Runner) logEvent(id, tenant, typ string, data any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tenant == "" {
		s, err := r.state.GetSession(ctx, id)
		if err != nil {
			r.log.Debug("no event for a session that is gone", "session", id, "type", typ, "err", err)
			return
		}
		tenant = s.Tenant
	}
	if err := r.pub.Publish(events.WithTenant(ctx, model.TenantOr(tenant)), typ, id, data); err != nil {
		r.log.Warn("publish", "type", typ, "err", err)
	}
}

func (r *Runner) emulatorStarted(s model.Session, m emulator.Machine, halted bool) {
	r.logEvent(s.ID, s.Tenant, events.TypeEmulatorStarted, events.EmulatorStarted{
		SessionID: s.ID, RunnerID: r.cfg.ID, Machine: s.Machine, Pid: m.Pid(), Halted: halted,
	})
}

// emulatorEnded reports the end of in; st is the session state it left,
// empty when it left the session as it was. A power off has no reason of
// its own: it says it was asked for.
func (r *Runner) emulatorEnded(id, tenant string, in *instance, st model.State, reason string) {
	e := in.m.Exit()
	exit := model.Exit{Kind: string(e.Kind), Code: e.Code, Signal: e.Signal}
	stopping, _, _ := in.requested()
	if stopping {
		exit = model.Exit{Kind: string(emulator.ExitStopped)}
	}
	switch {
	case reason != "":
	case stopping:
		reason = "stopped on request"
	default:
		reason = e.String()
	}
	r.logEvent(id, tenant, events.TypeEmulatorEnded, events.EmulatorEnded{
		SessionID: id, RunnerID: r.cfg.ID, Pid: in.m.Pid(), Exit: exit, Reason: reason, State: st,
	})
}

// debuggerEvents turns a session's debugger links into events.
func (r *Runner) debuggerEvents(id string) func(gdb.Link) {
	return func(l gdb.Link) {
		typ := events.TypeDebuggerAttached
		if l.EndedBy != "" {
			typ = events.TypeDebuggerDetached
		}
		r.logEvent(id, "", typ, events.Debugger{SessionID: id, RunnerID: r.cfg.ID, Who: l.Who, Since: l.Since.UTC(), EndedBy: l.EndedBy})
	}
}
