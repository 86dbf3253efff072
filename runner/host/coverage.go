package host

import (
	"context"
	"time"

	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/qemu"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// covState is a session's coverage window. Every emulator counts from its
// own start, so the window keeps what ended processes counted (acc) and
// what the running one had counted when the window opened (base).
type covState struct {
	on      bool
	started bool // a window was ever opened
	acc     report.Counts
	base    report.Counts
}

// add accumulates a window's counts. complete says nothing that ran is
// missing from c (a flush just before a stop or a kill, or a final file),
// whatever the plugin called the write.
func add(acc, c report.Counts, complete bool) report.Counts {
	if complete {
		c.Snapshot.Reason = "exit"
	}
	if len(acc.Blocks) == 0 && acc.Snapshot.Reason == "" {
		return c
	}
	return report.Merge(acc, c)
}

// counts flushes and reads a running emulator's counts.
func (r *Runner) counts(ctx context.Context, p *qemu.Process) (report.Counts, error) {
	if err := coverage.Flush(ctx, p.Dir()); err != nil {
		return report.Counts{}, err
	}
	return coverage.Read(p.Dir())
}

// harvest adds what an ended emulator counted in the open window. Its file
// is final after a normal exit; after a kill it is the last periodic write,
// and the report says counts may be missing. s.mu is held.
func (r *Runner) harvest(s *session, p *qemu.Process) { r.harvestFile(s, p, false) }

func (r *Runner) harvestFile(s *session, p *qemu.Process, live bool) {
	if !s.cov.on || r.plugin == "" {
		return
	}
	c, err := coverage.Read(p.Dir())
	if err != nil {
		r.log.Warn("coverage of an ended emulator lost", "session", s.id, "err", err)
		return
	}
	s.cov.acc = add(s.cov.acc, report.Subtract(c, s.cov.base), live)
	s.cov.base = report.Counts{}
}

// harvestLive is harvest for an emulator about to be killed: its counts are
// flushed first, so the kill loses nothing. s.mu is held.
func (r *Runner) harvestLive(s *session, p *qemu.Process) {
	if !s.cov.on || r.plugin == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := coverage.Flush(ctx, p.Dir())
	if err != nil {
		r.log.Warn("coverage flush before replacing the machine", "session", s.id, "err", err)
	}
	r.harvestFile(s, p, err == nil)
}

func (r *Runner) covSession(id string) (*session, error) {
	if r.plugin == "" {
		return nil, httpapi.Unprocessable("coverage is not available on runner %s (its coverage plugin is missing)", r.cfg.ID)
	}
	return r.slot(id, true)
}

// CoverageStart opens the session's coverage window (idempotent).
func (r *Runner) CoverageStart(ctx context.Context, id string) error {
	s, err := r.covSession(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return r.openWindow(ctx, s)
}

// openWindow starts counting from now. s.mu is held.
func (r *Runner) openWindow(ctx context.Context, s *session) error {
	if s.cov.on {
		return nil
	}
	base := report.Counts{}
	if s.proc != nil {
		var err error
		if base, err = r.counts(ctx, s.proc); err != nil {
			return err
		}
	}
	s.cov = covState{on: true, started: true, acc: s.cov.acc, base: base}
	return nil
}

// CoverageStop closes the window; what it counted stays readable.
func (r *Runner) CoverageStop(ctx context.Context, id string) error {
	s, err := r.covSession(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cov.on {
		return nil
	}
	if s.proc != nil {
		c, err := r.counts(ctx, s.proc)
		if err != nil {
			return err
		}
		s.cov.acc = add(s.cov.acc, report.Subtract(c, s.cov.base), true)
	}
	s.cov.on, s.cov.base = false, report.Counts{}
	return nil
}

// Coverage is what the window counted so far, the running emulator's
// counts up to now included.
func (r *Runner) Coverage(ctx context.Context, id string) (report.Counts, error) {
	s, err := r.covSession(id)
	if err != nil {
		return report.Counts{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cov.started {
		return report.Counts{}, httpapi.Conflict("coverage was never started for session %s; POST .../coverage/start (or create it with \"coverage\": true)", id)
	}
	c := s.cov.acc
	if s.cov.on && s.proc != nil {
		now, err := r.counts(ctx, s.proc)
		if err != nil {
			return report.Counts{}, err
		}
		// A read while running is a snapshot: later counts are to come.
		c = add(c, report.Subtract(now, s.cov.base), false)
	}
	return c, nil
}
