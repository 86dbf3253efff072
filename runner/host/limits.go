package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/machineserver/machineserver/runner/cgroup"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// tracked is a live emulator's cgroup and the limits it runs under.
type tracked struct {
	group  *cgroup.Group
	limits cgroup.Limits
}

// openLimits finds the cgroup hierarchy and says in the capabilities what
// is enforced. The parent group is named after the socket directory, which
// only one live runner uses at a time (it reconciles the directory's
// emulators away at start): a restarted runner finds and prunes what its
// predecessor left, whatever its id, and groups of runners whose socket
// directory is gone are pruned too.
func (r *Runner) openLimits() {
	sockets := filepath.Dir(r.cfg.SocketDir)
	r.cg = cgroup.Open("machineserver/" + safeName(filepath.Base(r.cfg.SocketDir)))
	r.cg.PruneStale(func(runner string) bool {
		_, err := os.Stat(filepath.Join(sockets, runner))
		return errors.Is(err, os.ErrNotExist)
	})
	ls := &board.LimitSupport{CPU: r.cg.CPU(), Memory: r.cg.Memory(), Cgroup: string(r.cg.Version()), Reason: r.cg.Reason()}
	if ls.CPU {
		ls.DefaultCPUPercent = r.cfg.CPUPercent
	}
	if ls.Memory {
		ls.DefaultMemoryMB = r.cfg.MemoryMB
	}
	if r.cfg.IdleTimeout > 0 {
		ls.IdleTimeout = shortDuration(r.cfg.IdleTimeout)
	}
	if r.cfg.Prelaunch {
		ls.Spares = r.cfg.Spares
	}
	r.caps.Limits = ls
	feats := slices.Clone(r.caps.Features)
	if ls.CPU {
		feats = append(feats, "cpu-limit")
	}
	if ls.Memory {
		feats = append(feats, "memory-limit")
	}
	if r.cfg.IdleTimeout > 0 {
		feats = append(feats, "idle-timeout")
	}
	r.caps.Features = feats
	if r.cg.Version() == cgroup.None {
		r.log.Warn("cgroups not writable: sessions run without CPU and memory limits, and CPU limits are refused", "reason", r.cg.Reason())
	} else {
		r.log.Info("session limits", "cgroup", r.cg.Version(), "cpu", ls.CPU, "memory", ls.Memory,
			"default_cpu_percent", ls.DefaultCPUPercent, "default_memory_mb", ls.DefaultMemoryMB, "idle_timeout", ls.IdleTimeout)
	}
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\n' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

// limitsFor resolves what an emulator of the session runs under: the
// request's limits, else the session's, with the runner's defaults for what
// neither sets (defaults only where this machine enforces them). A limit
// asked for explicitly that cannot be enforced is refused, not ignored.
func (r *Runner) limitsFor(s *session, req runnerapi.StartRequest) (cgroup.Limits, error) {
	l := req.Limits
	if l == nil {
		l = s.limits
	}
	var asked model.Limits
	if l != nil {
		asked = *l
	}
	if err := runnerapi.CheckLimits(&asked); err != nil {
		return cgroup.Limits{}, err
	}
	if asked.CPUPercent > 0 && !r.cg.CPU() {
		return cgroup.Limits{}, httpapi.Unprocessable("this runner cannot enforce CPU limits (cgroup %s: %s); create the session without limits.cpu_percent", r.cg.Version(), r.cg.Reason())
	}
	if asked.MemoryMB > 0 && !r.cg.Memory() {
		return cgroup.Limits{}, httpapi.Unprocessable("this runner cannot enforce memory limits (cgroup %s: %s); create the session without limits.memory_mb", r.cg.Version(), r.cg.Reason())
	}
	out := cgroup.Limits{CPUPercent: asked.CPUPercent, MemoryBytes: int64(asked.MemoryMB) << 20}
	if out.CPUPercent == 0 && r.cg.CPU() && r.cfg.CPUPercent > 0 {
		out.CPUPercent = r.cfg.CPUPercent
	}
	if out.MemoryBytes == 0 && r.cg.Memory() && r.cfg.MemoryMB > 0 {
		out.MemoryBytes = int64(r.cfg.MemoryMB) << 20
	}
	return out, nil
}

// group creates the cgroup of an emulator about to be launched.
func (r *Runner) group(s *session, l cgroup.Limits) (*cgroup.Group, error) {
	g, err := r.cg.New(fmt.Sprintf("%s-%d", s.id, s.gen), l)
	if errors.Is(err, cgroup.ErrUnsupported) {
		return nil, httpapi.Unprocessable("this runner cannot enforce the session's limits (cgroup %s)", r.cg.Version())
	}
	return g, err
}

// track remembers a launched emulator's group; retire forgets it once the
// process is gone, removing the group and keeping its CPU time for the
// runner_emulator_cpu_seconds_total counter.
func (r *Runner) track(m emulator.Machine, t tracked) {
	r.procMu.Lock()
	r.procs[m] = t
	r.procMu.Unlock()
}

func (r *Runner) retire(m emulator.Machine) {
	r.procMu.Lock()
	t, ok := r.procs[m]
	delete(r.procs, m)
	if ok {
		cpu, _ := m.Usage()
		r.exitedCPU += cpu
	}
	r.procMu.Unlock()
	if ok {
		if err := t.group.Remove(); err != nil {
			r.log.Warn("cgroup not removed", "err", err)
		}
	}
}

func (r *Runner) trackedOf(m emulator.Machine) (tracked, bool) {
	if m == nil {
		return tracked{}, false
	}
	r.procMu.Lock()
	defer r.procMu.Unlock()
	t, ok := r.procs[m]
	return t, ok
}

// oomReason says why m ended (as e) if the kernel's OOM killer ended it for
// its memory cap, and "" otherwise.
func (r *Runner) oomReason(m emulator.Machine, e emulator.Exit) string {
	t, ok := r.trackedOf(m)
	if !ok || t.limits.MemoryBytes == 0 || e.Kind != emulator.ExitSignal || !t.group.OOMKilled() {
		return ""
	}
	return fmt.Sprintf("memory limit exceeded: the emulator used more than its %d MB (limits.memory_mb) and the kernel's OOM killer ended it", t.limits.MemoryBytes>>20)
}

// stats is what the runner reports at each /metrics scrape.
func (r *Runner) stats() metrics.RunnerStats {
	r.procMu.Lock()
	procs := make([]emulator.Machine, 0, len(r.procs))
	for p := range r.procs {
		procs = append(procs, p)
	}
	cpu := r.exitedCPU
	r.procMu.Unlock()
	st := metrics.RunnerStats{ActiveSessions: r.running(), Spares: int(r.spares.Load())}
	for _, p := range procs {
		c, rss := p.Usage()
		cpu += c
		st.MemoryBytes += rss
		select {
		case <-p.Done():
		default:
			st.Processes++
		}
	}
	st.CPUSeconds = cpu.Seconds()
	return st
}

// Activity, for the idle timeout: any internal API call about the session
// (power, reset, console read or write, streams, snapshot, restore,
// coverage, debugger info) and the start itself touch it; while a console
// WebSocket or a debugger is attached it is never idle. Console output
// alone is not activity: a firmware that prints forever is not in use.
func (s *session) touch() { s.active.Store(time.Now().UnixNano()) }

// touch also orders the session's spares, least recently used first to go.
func (r *Runner) touch(id string) {
	r.mu.Lock()
	s := r.sessions[id]
	r.mu.Unlock()
	if s != nil {
		s.touch()
		r.budget.use(id)
	}
}

// idleLoop powers off sessions idle for longer than the timeout.
func (r *Runner) idleLoop(done <-chan struct{}) {
	every := min(r.cfg.IdleTimeout/4, time.Second)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		all := make([]*session, 0, len(r.sessions))
		for _, s := range r.sessions {
			all = append(all, s)
		}
		r.mu.Unlock()
		for _, s := range all {
			if s.watchers.Load() > 0 {
				s.touch()
				continue
			}
			if _, ok := s.gdb.Attached(); ok {
				s.touch()
				continue
			}
			if time.Since(time.Unix(0, s.active.Load())) < r.cfg.IdleTimeout {
				continue
			}
			go r.stopIdle(s)
		}
	}
}

func (r *Runner) stopIdle(s *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Re-checked under the lock: a power on or a call may have come meanwhile.
	if s.proc == nil || time.Since(time.Unix(0, s.active.Load())) < r.cfg.IdleTimeout {
		return
	}
	reason := fmt.Sprintf("idle timeout (%s) reached", shortDuration(r.cfg.IdleTimeout))
	r.log.Info("powering off idle session", "session", s.id, "idle_timeout", r.cfg.IdleTimeout)
	r.stopLocked(s, reason)
}

// shortDuration prints 30m rather than 30m0s.
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}
