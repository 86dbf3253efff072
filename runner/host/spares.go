package host

import (
	"context"
	"sync"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// spare is a paused machine kept ready for one image: cold ones boot it on
// power on, incoming ones take a snapshot on restore. owner is the session
// it belongs to, whose room in the budget it holds.
type spare struct {
	m     emulator.Machine
	key   string
	owner string
}

// spareBudget bounds the runner's spares (each an idle emulator, QEMU's about 20 MiB
// kept only to save a cold start) and orders sessions by their last use, so
// that when a session needs room the spares of the least recently used go
// first. Room is reserved before a spare is launched and given back when it
// goes, so launches in flight count too.
type spareBudget struct {
	mu    sync.Mutex
	clock uint64
	used  map[string]uint64 // session id -> clock at its last use
	held  map[string]int    // session id -> spares alive or being launched
	n     int               // sum of held
}

func newSpareBudget() *spareBudget {
	return &spareBudget{used: map[string]uint64{}, held: map[string]int{}}
}

// use makes the session the most recently used.
func (b *spareBudget) use(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clock++
	b.used[id] = b.clock
}

// forget drops a deleted session's place in the order; its spares give
// their room back through release.
func (b *spareBudget) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.used, id)
}

// reserve claims room for one more spare of session id while fewer than
// limit are held. When there is no room it names the least recently used
// session that holds spares and was used before id, whose spares the caller
// may drop to make room, or "" when there is none: id is then the least
// recently used itself and gets no spare.
func (b *spareBudget) reserve(id string, limit int) (ok bool, victim string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n < limit {
		b.n++
		b.held[id]++
		return true, ""
	}
	oldest := b.used[id]
	for v := range b.held {
		if v != id && b.used[v] < oldest {
			victim, oldest = v, b.used[v]
		}
	}
	return false, victim
}

// release gives back the room of one spare of session id.
func (b *spareBudget) release(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[id] == 0 {
		return
	}
	b.n--
	if b.held[id]--; b.held[id] == 0 {
		delete(b.held, id)
	}
}

// setSpare keeps the counters in step with the slot: a spare that goes
// gives its room in the budget back. s.mu is held.
func (r *Runner) setSpare(sp *spare, m emulator.Machine) {
	r.spares.Add(delta(sp.m != nil, m != nil))
	if sp.m != nil && m == nil {
		r.budget.release(sp.owner)
	}
	sp.m = m
}

// take returns the spare if it serves key, and discards it otherwise.
// s.mu is held.
func (r *Runner) take(sp *spare, key string) emulator.Machine {
	m := sp.m
	if m == nil {
		return nil
	}
	r.setSpare(sp, nil)
	if sp.key != key {
		r.discard(m)
		return nil
	}
	select {
	case <-m.Done():
		r.removeDir(m)
		return nil
	default:
	}
	return m
}

// drop kills a spare. s.mu is held.
func (r *Runner) drop(sp *spare) {
	if m := sp.m; m != nil {
		r.setSpare(sp, nil)
		r.discard(m)
	}
}

func (r *Runner) dropSpares(s *session) {
	r.drop(&s.cold)
	r.drop(&s.incoming)
}

// Prepare records what the session will run and prelaunches a spare for it.
func (r *Runner) Prepare(id string, req runnerapi.StartRequest) error {
	if _, err := r.boardOf(req.Machine); err != nil {
		return err
	}
	s, err := r.slot(id, true)
	if err != nil {
		return err
	}
	if err := runnerapi.CheckLimits(req.Limits); err != nil {
		return err
	}
	s.mu.Lock()
	req.Halted, req.Restart = false, false
	r.setLast(s, &req)
	if req.Limits != nil {
		s.limits = req.Limits
	}
	s.mu.Unlock()
	r.prepare(s)
	return nil
}

// prepare starts spares in the background when prelaunch is on: a cold one
// while the session is stopped, and an incoming one once the session has
// used snapshots. It counts as a use of the session, so room is made by
// dropping the spares of sessions used less recently. The launch holds
// s.mu, so a power on or restore arriving meanwhile waits and then uses the
// spare.
func (r *Runner) prepare(s *session) {
	if !r.cfg.Prelaunch || r.cfg.Spares <= 0 {
		return
	}
	go func() {
		s.mu.Lock()
		if !s.deleted {
			// Under s.mu, so a deleted session is not brought back into
			// the order after Delete forgot it.
			r.budget.use(s.id)
		}
		want := len(r.missingSpares(s))
		s.mu.Unlock()
		// Room is made without s.mu: making it locks the sessions whose
		// spares go, and one of them may be waiting for room itself.
		reserved := 0
		for reserved < want && r.makeRoom(s.id) {
			reserved++
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		// Asked again: a power on or a delete may have come meanwhile.
		for _, sp := range r.missingSpares(s) {
			if reserved == 0 {
				break
			}
			reserved--
			r.launchSpare(s, sp)
		}
		for ; reserved > 0; reserved-- {
			r.budget.release(s.id)
		}
	}()
}

// missingSpares drops the session's spares that no longer serve its image
// and returns the spares it should have but lacks. s.mu is held.
func (r *Runner) missingSpares(s *session) []*spare {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed || s.deleted || s.last == nil {
		return nil
	}
	var want []*spare
	if s.proc == nil {
		want = append(want, &s.cold)
	}
	if s.restorable {
		want = append(want, &s.incoming)
	}
	key := imageKey(*s.last)
	missing := want[:0]
	for _, sp := range want {
		if sp.m != nil && sp.key == key {
			continue
		}
		r.drop(sp)
		missing = append(missing, sp)
	}
	return missing
}

// makeRoom reserves room for one spare of the session, dropping the spares
// of less recently used sessions while the budget is full. Spares also never
// take room running sessions need: the limit shrinks as sessions run.
func (r *Runner) makeRoom(id string) bool {
	for {
		limit := min(r.cfg.Spares, r.cfg.Capacity-r.running())
		if limit <= 0 {
			// Nothing dropped could make room.
			return false
		}
		ok, victim := r.budget.reserve(id, limit)
		if ok {
			return true
		}
		if victim == "" || !r.evict(victim, id) {
			return false
		}
	}
}

// evict drops the spares of session id to give their room to session
// newer, and says whether any went (none when the session's room is held by
// a launch still in flight, which the caller then does not wait for).
func (r *Runner) evict(id, newer string) bool {
	r.mu.Lock()
	s := r.sessions[id]
	r.mu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	had := s.cold.m != nil || s.incoming.m != nil
	r.dropSpares(s)
	if had {
		r.log.Info("spares dropped for a more recently used session", "session", id, "for", newer)
	}
	return had
}

// launchSpare makes sp a paused machine for the session's image, on room
// reserved in the budget, which a failed launch gives back. s.mu is held.
func (r *Runner) launchSpare(s *session, sp *spare) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := r.launch(ctx, s, *s.last, sp == &s.incoming)
	if err != nil {
		r.budget.release(s.id)
		r.log.Warn("prelaunch failed", "session", s.id, "err", err)
		return
	}
	sp.key, sp.owner = imageKey(*s.last), s.id
	r.setSpare(sp, m)
	go func() {
		// A spare that dies while waiting is simply forgotten.
		<-m.Done()
		s.mu.Lock()
		if sp.m == m {
			r.setSpare(sp, nil)
			r.removeDir(m)
		}
		s.mu.Unlock()
	}()
}
