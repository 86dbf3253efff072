package host

import (
	"context"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
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

// countsOf is what a machine has counted so far (all of it once it has
// ended): a machine launched without counting has counted nothing.
func countsOf(ctx context.Context, m emulator.Machine) (report.Counts, error) {
	c, ok := m.(emulator.Counter)
	if !ok {
		return report.Counts{}, nil
	}
	return c.Counts(ctx)
}

// harvest adds what an ended emulator counted in the open window. Its
// counts are final after a normal exit; after a kill they may miss the last
// moments, and the report says counts may be missing. s.mu is held.
func (r *Runner) harvest(s *session, m emulator.Machine) { r.harvestCounts(s, m, false) }

func (r *Runner) harvestCounts(s *session, m emulator.Machine, live bool) {
	if !s.cov.on || !r.coverage {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := countsOf(ctx, m)
	if err != nil {
		r.log.Warn("coverage of an ended emulator lost", "session", s.id, "err", err)
		return
	}
	s.cov.acc = add(s.cov.acc, report.Subtract(c, s.cov.base), live)
	s.cov.base = report.Counts{}
}

// harvestLive is harvest for an emulator about to be killed: it is still
// running, so what it reports is everything it ran. s.mu is held.
func (r *Runner) harvestLive(s *session, m emulator.Machine) { r.harvestCounts(s, m, true) }

func (r *Runner) covSession(id string) (*session, error) {
	if !r.coverage {
		return nil, httpapi.Unprocessable("coverage is not available on runner %s (its %s backend counts no board's code)", r.cfg.ID, r.offered.Name)
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
		if base, err = countsOf(ctx, s.proc.m); err != nil {
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
		c, err := countsOf(ctx, s.proc.m)
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
		now, err := countsOf(ctx, s.proc.m)
		if err != nil {
			return report.Counts{}, err
		}
		// A read while running is a snapshot: later counts are to come.
		c = add(c, report.Subtract(now, s.cov.base), false)
	}
	return c, nil
}
