package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

// reconcile kills emulators a crashed predecessor left and marks the sessions
// it had as lost: they are never silently kept as running.
func (r *Runner) reconcile(ctx context.Context) error {
	ents, _ := os.ReadDir(r.cfg.SocketDir)
	for _, e := range ents {
		dir := filepath.Join(r.cfg.SocketDir, e.Name())
		if r.backend.Reap(dir) {
			r.log.Warn("killed emulator left by a previous runner", "dir", dir)
		}
		os.RemoveAll(dir)
	}
	sessions, err := r.state.SessionsOnRunner(ctx, r.cfg.ID)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if s.State != model.StateRunning {
			continue
		}
		updated, err := r.state.UpdateSession(ctx, s.ID, func(s *model.Session) error {
			if s.State != model.StateRunning || s.RunnerID != r.cfg.ID {
				return errUnchanged
			}
			s.State, s.Reason = model.StateError, "lost: the runner restarted and the emulator is gone"
			return nil
		})
		if err == nil {
			r.log.Warn("marked session lost after restart", "session", s.ID)
			r.publish(events.TypeSessionFailed, updated)
			if _, err := r.state.AbandonRecording(ctx, updated.RecordingID, "not stored: the runner recording it restarted"); err != nil {
				r.log.Warn("mark recording failed", "recording", updated.RecordingID, "err", err)
			}
		}
	}
	return nil
}

var errUnchanged = errors.New("unchanged")

func (r *Runner) register(ctx context.Context) error {
	return r.state.RegisterRunner(ctx, state.Runner{
		ID: r.cfg.ID, URL: r.cfg.URL, Capacity: r.cfg.Capacity, Running: r.running(),
		Capabilities: r.caps, StartedAt: r.start,
	}, 3*r.cfg.Heartbeat)
}

// Run refreshes the registration until ctx ends, then shuts down.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.loadChanged:
		}
		hctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
		if err := r.register(hctx); err != nil {
			r.log.Error("heartbeat failed", "err", err)
		}
		cancel()
	}
}

// Shutdown stops every emulator (their sessions become stopped) and
// unregisters the runner.
func (r *Runner) Shutdown(ctx context.Context) {
	// The barriers first: they would resume nodes being stopped.
	r.stopClocks()
	r.mu.Lock()
	r.closed = true
	all := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stop(s)
			s.mu.Lock()
			r.dropSpares(s)
			s.mu.Unlock()
			s.gdb.Close()
		}()
	}
	wg.Wait()
	close(r.idleDone)
	r.dropMetrics()
	r.cg.Close()
	if err := r.state.UnregisterRunner(ctx, r.cfg.ID); err != nil {
		r.log.Warn("unregister", "err", err)
	}
}
