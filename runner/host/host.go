package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/cgroup"
	"github.com/machineserver/machineserver/runner/console"
	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Settings are the runner's tunables, the same in a runner pod and in the
// standalone server; main parses them from the environment (envconfig tags).
type Settings struct {
	// SocketDir holds the per-emulator sockets; short, since unix socket
	// paths are capped at 108 bytes. Default: /tmp/ms-<hash of id and Dir>.
	SocketDir string `envconfig:"MS_RUNNER_SOCKET_DIR"`
	// QEMU are the emulator binaries offered (names on PATH or paths), one
	// per architecture; those not installed are left out, with a warning.
	QEMU         []string `envconfig:"MS_QEMU_BINARIES" default:"qemu-system-arm,qemu-system-riscv32,qemu-system-avr"`
	Capacity     int      `envconfig:"MS_RUNNER_CAPACITY" default:"16"`
	ConsoleBytes int      `envconfig:"MS_CONSOLE_BUFFER_BYTES" default:"1048576"`
	// ConsoleGather is how long the console pump waits between reads while
	// output keeps coming (0: read as it comes). QEMU writes the UART a
	// byte per send and its socket holds only about a hundred such sends,
	// so this also paces a guest that prints flat out: 1 ms gives it about
	// 160 KiB/s (fourteen times a 115200-baud UART) for a quarter of a core
	// in the runner, where reading as it comes gives 370 to 640 KiB/s for
	// all of one.
	ConsoleGather time.Duration `envconfig:"MS_CONSOLE_GATHER" default:"1ms"`
	StopGrace     time.Duration `envconfig:"MS_STOP_GRACE" default:"2s"`
	// Prelaunch keeps a paused QEMU ready for each stopped session that has
	// a program, so power on is a QMP cont instead of a cold start.
	Prelaunch bool `envconfig:"MS_PRELAUNCH" default:"true"`
	// Spares bounds those paused QEMUs (a session that used snapshots has
	// two): past it, the spares of the least recently used sessions go,
	// and their next power on or restore is a cold start. 0 keeps none.
	Spares int `envconfig:"MS_RUNNER_SPARES" default:"16"`
	// GDBListen is the address each session's debugger port binds to (port
	// 0: one ephemeral port per session); GDBAdvertise is the host name
	// reported to users (default: the listen host, or the hostname when
	// listening on all interfaces).
	GDBListen string `envconfig:"MS_GDB_LISTEN" default:"127.0.0.1"`
	// Coverage loads the coverage plugin into every emulator (found through
	// MS_COVERAGE_PLUGIN or build/plugin); without it coverage is offered
	// by no board.
	Coverage bool `envconfig:"MS_COVERAGE" default:"true"`
	// Heartbeat is how often the registration in Redis is refreshed; it
	// expires after three missed beats, and the runner's sessions are lost.
	Heartbeat    time.Duration `envconfig:"MS_RUNNER_HEARTBEAT" default:"5s"`
	GDBAdvertise string        `envconfig:"MS_GDB_ADVERTISE_HOST"`
	// CPUPercent (of one core) and MemoryMB cap each emulator through
	// cgroups unless the session sets its own limits; 0 is unlimited.
	CPUPercent int `envconfig:"MS_SESSION_CPU_PERCENT" default:"100"`
	MemoryMB   int `envconfig:"MS_SESSION_MEMORY_MB" default:"256"`
	// IdleTimeout powers off a running session nobody used for that long
	// (see session.touch for what counts); 0 never does.
	IdleTimeout time.Duration `envconfig:"MS_IDLE_TIMEOUT" default:"30m"`
}

// Config is what a runner needs.
type Config struct {
	Settings
	ID    string
	URL   string // where functions reach the internal API
	Dir   string // the program cache
	Token string
}

// Runner hosts emulators.
type Runner struct {
	cfg   Config
	state *state.Store
	blobs blob.Store
	pub   events.Publisher
	log   *slog.Logger
	caps  board.Capabilities
	// backend runs the boards (for now only its probe and its choice of
	// binary per board are used; launches still go through qemu.Start).
	backend *qemu.Backend
	start   time.Time
	// plugin is the coverage plugin, "" when coverage is unavailable.
	plugin string

	mu       sync.Mutex
	sessions map[string]*session
	// deleted remembers recently deleted session ids (ids are random and
	// never reused), pruned after an hour.
	deleted map[string]time.Time
	// active and spares count emulators without taking every session's lock.
	active, spares atomic.Int32
	closed         bool
	fetchMu        sync.Mutex

	// cg caps emulators; procs are the live emulators with their groups,
	// and exitedCPU the CPU time of those gone (for metrics).
	cg          *cgroup.Manager
	procMu      sync.Mutex
	procs       map[*qemu.Process]tracked
	exitedCPU   time.Duration
	dropMetrics func()
	idleDone    chan struct{}
	// budget bounds the spares (spares.go).
	budget *spareBudget
}

// session is one session's emulator slot. ring outlives processes: the UART
// history persists across power cycles until the session is deleted.
type session struct {
	id   string
	ring *console.Ring
	// gdb is the session's debugger access; it outlives processes like the
	// ring, and points at whichever QEMU is the session's machine.
	gdb     *gdb.Endpoint
	gdbAddr string
	mu      sync.Mutex // serialises start/stop/reset/delete
	proc    *qemu.Process
	// stopping marks a stop we asked for, so its exit is not an error.
	stopping bool
	pumped   chan struct{} // closed when the console pump of proc ended
	// drain carries a request to the pump to move everything QEMU has
	// written so far into the ring, answered with the ring's end.
	drain chan chan int64
	// Spares are paused QEMUs already loaded with last's image (Prelaunch);
	// restorable marks a session that used snapshots, so it gets an
	// incoming spare too.
	cold, incoming spare
	cov            covState
	restorable     bool
	last           *runnerapi.StartRequest
	gen            int // numbers instance directories, so a spare and the active process never share sockets
	deleted        bool
	// limits are the session's own caps (from start or prepare), kept for
	// restores, whose requests carry none.
	limits *model.Limits
	// stopReason is the reason recorded for a stop the runner decided on
	// (the idle timeout); active (unix ns) and watchers feed that timeout.
	stopReason string
	active     atomic.Int64
	watchers   atomic.Int32
}

// imageKey says whether a spare can serve a start request.
func imageKey(req runnerapi.StartRequest) string {
	return fmt.Sprintf("%s|%s|%s|%x", req.Machine, req.Program.SHA256, req.Program.Format, req.Program.LoadAddress)
}

// New probes QEMU, reconciles sessions a previous incarnation left, and
// registers the runner.
func New(ctx context.Context, cfg Config, st *state.Store, blobs blob.Store, pub events.Publisher, log *slog.Logger) (*Runner, error) {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 16
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 2 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.Spares < 0 {
		return nil, fmt.Errorf("host: MS_RUNNER_SPARES is %d; it is how many paused spare emulators to keep, 0 or more", cfg.Spares)
	}
	if cfg.SocketDir == "" {
		// Per runner identity and data directory, so two runners on one
		// machine (or two standalone servers) never reconcile each other's
		// emulators away.
		sum := sha256.Sum256([]byte(cfg.ID + "\x00" + cfg.Dir))
		cfg.SocketDir = filepath.Join(os.TempDir(), "ms-"+hex.EncodeToString(sum[:4]))
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "cache"), cfg.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
	}
	// The probe's snapshot results are cached in the program cache's
	// directory: it starts two emulators per board.
	backend := qemu.New(qemu.Options{Binaries: cfg.QEMU, CacheDir: cfg.Dir})
	offered, err := backend.Probe(ctx)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg: cfg, state: st, blobs: blobs, pub: pub, log: log.With("runner", cfg.ID),
		backend:  backend,
		caps:     board.Document(offered),
		start:    time.Now().UTC(),
		sessions: map[string]*session{},
		deleted:  map[string]time.Time{},
		procs:    map[*qemu.Process]tracked{},
		idleDone: make(chan struct{}),
		budget:   newSpareBudget(),
	}
	r.openLimits()
	if cfg.Coverage {
		if r.plugin, err = coverage.Locate(); err != nil {
			r.log.Warn("coverage unavailable", "err", err)
		}
	}
	if r.plugin != "" {
		r.caps.Features = append(slices.Clone(r.caps.Features), "coverage")
		for i := range r.caps.Backends[0].Boards {
			b := &r.caps.Backends[0].Boards[i]
			b.Features = append(slices.Clone(b.Features), "coverage")
		}
	}
	if err := r.reconcile(ctx); err != nil {
		return nil, err
	}
	if err := r.register(ctx); err != nil {
		return nil, err
	}
	r.dropMetrics = metrics.AddRunner(r.stats)
	if cfg.IdleTimeout > 0 {
		go r.idleLoop(r.idleDone)
	}
	return r, nil
}

// Capabilities is what this runner's QEMU offers.
func (r *Runner) Capabilities() board.Capabilities { return r.caps }

// reconcile kills emulators a crashed predecessor left and marks the sessions
// it had as lost: they are never silently kept as running.
func (r *Runner) reconcile(ctx context.Context) error {
	ents, _ := os.ReadDir(r.cfg.SocketDir)
	for _, e := range ents {
		dir := filepath.Join(r.cfg.SocketDir, e.Name())
		if qemu.KillStale(dir) {
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
			hctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
			if err := r.register(hctx); err != nil {
				r.log.Error("heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}

// Shutdown stops every emulator (their sessions become stopped) and
// unregisters the runner.
func (r *Runner) Shutdown(ctx context.Context) {
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

func (r *Runner) slot(id string, create bool) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[id]
	if ok {
		return s, nil
	}
	if !create {
		return nil, httpapi.NotFound("session %s has no emulator on runner %s", id, r.cfg.ID)
	}
	if r.closed {
		return nil, httpapi.Unavailable("runner %s is shutting down", r.cfg.ID)
	}
	if _, gone := r.deleted[id]; gone {
		// A request that raced the delete must not bring the slot back.
		return nil, httpapi.NotFound("session %s was deleted", id)
	}
	s = &session{id: id, ring: console.NewRing(r.cfg.ConsoleBytes), gdb: gdb.New(r.log.With("session", id)), drain: make(chan chan int64, 1)}
	addr, err := s.gdb.ListenTCP(net.JoinHostPort(r.cfg.GDBListen, "0"), nil)
	if err != nil {
		return nil, fmt.Errorf("debugger port for session %s: %w", id, err)
	}
	s.gdbAddr = net.JoinHostPort(r.gdbHost(), strconv.Itoa(addr.(*net.TCPAddr).Port))
	r.sessions[id] = s
	return s, nil
}

func (r *Runner) running() int { return int(r.active.Load()) }

// usable refuses a slot that was deleted, or a runner shutting down, once
// the caller holds s.mu (the slot was looked up before the lock). s.mu is
// held.
func (r *Runner) usable(s *session) error {
	if s.deleted {
		return httpapi.NotFound("session %s was deleted", s.id)
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return httpapi.Unavailable("runner %s is shutting down", r.cfg.ID)
	}
	return nil
}

// gdbHost is the host name debuggers are told to connect to.
func (r *Runner) gdbHost() string {
	if r.cfg.GDBAdvertise != "" {
		return r.cfg.GDBAdvertise
	}
	if ip := net.ParseIP(r.cfg.GDBListen); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			return h
		}
	}
	return r.cfg.GDBListen
}

// setProc keeps the counter in step with the slot (setSpare likewise for
// spares); s.mu is held.
func (r *Runner) setProc(s *session, p *qemu.Process) {
	r.active.Add(delta(s.proc != nil, p != nil))
	s.proc = p
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
	if _, ok := r.caps.Backends[0].Board(req.Machine); !ok {
		return runnerapi.Status{}, httpapi.Unprocessable("machine %q is not offered by this runner", req.Machine)
	}
	s, err := r.slot(id, true)
	if err != nil {
		return runnerapi.Status{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.usable(s); err != nil {
		return runnerapi.Status{}, err
	}
	if s.proc != nil {
		if !req.Restart {
			return runnerapi.Status{}, httpapi.Conflict("session %s is already running; power it off first or reset it", id)
		}
		r.stopLocked(s)
		// stopLocked let go of s.mu: the slot may have changed meanwhile.
		if err := r.usable(s); err != nil {
			return runnerapi.Status{}, err
		}
		if s.proc != nil {
			return runnerapi.Status{}, httpapi.Conflict("session %s was started by another request meanwhile", id)
		}
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
	proc := r.take(&s.cold, imageKey(req))
	if t, ok := r.trackedOf(proc); proc != nil && (!ok || t.limits != lim) {
		// Prelaunched under other limits: not this machine.
		proc.Kill()
		<-proc.Done()
		r.removeDir(proc)
		proc = nil
	}
	if proc == nil {
		if proc, err = r.launch(ctx, s, req, false); err != nil {
			return runnerapi.Status{}, err
		}
	}
	last := req
	last.Halted, last.Restart, last.Coverage = false, false, false
	s.last = &last
	if req.Coverage && r.plugin != "" && !s.cov.on {
		// From the first instruction: the new process has counted nothing.
		s.cov = covState{on: true, started: true, acc: s.cov.acc}
	}
	t1 := time.Now()
	from := s.ring.End()
	st, err := r.activate(ctx, s, proc, req.Halted)
	if err != nil || !st.Running {
		return st, err
	}
	r.log.Info("emulator started", "session", id, "machine", req.Machine, "pid", proc.Pid(), "program", req.Program.ID,
		"launch_ms", ms(t1.Sub(t0)), "run_ms", ms(time.Since(t1)))
	if !req.Halted && r.crashedAtBoot(ctx, s, proc, from) {
		return r.status(s), nil
	}
	return st, nil
}

// bootSettle bounds how long power on waits for a booting guest's first
// UART output. A guest that crashes QEMU before any (an image built for
// another board locks the CPU up within a few milliseconds) is answered
// with its error instead of "running"; a guest that prints at boot costs
// nothing, and only one silent at boot waits it out.
const bootSettle = 25 * time.Millisecond

// crashedAtBoot waits up to bootSettle for the guest's first UART output
// after from, and reports whether QEMU ended before it; its end is then
// recorded. s.mu is held.
func (r *Runner) crashedAtBoot(ctx context.Context, s *session, p *qemu.Process, from int64) bool {
	ctx, cancel := context.WithTimeout(ctx, bootSettle)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = s.ring.Wait(ctx, from) // output, QEMU's end or the bound: all mean stop waiting
	select {
	case <-p.Done():
		r.awaitRecorded(s)
		return true
	default:
		return false
	}
}

// activate makes a paused process the session's machine: it pumps its UART
// into the ring, records the running state, lets the guest run (unless
// halted) and watches for its end. s.mu is held.
func (r *Runner) activate(ctx context.Context, s *session, proc *qemu.Process, halted bool) (runnerapi.Status, error) {
	r.setProc(s, proc)
	s.stopping, s.pumped, s.stopReason = false, make(chan struct{}), ""
	s.touch()
	go r.pump(s, proc, s.pumped)
	// Watched from now on, so even a failure below is recorded and cleaned
	// up (watch waits for s.mu, which the caller holds until we return).
	go r.watch(s, proc)
	s.gdb.SetStub(filepath.Join(proc.Dir(), qemu.GDBSocket))

	now := time.Now().UTC()
	updated, err := r.state.UpdateSession(ctx, s.id, func(sess *model.Session) error {
		sess.State, sess.Reason, sess.StartedAt, sess.RunnerID = model.StateRunning, "", &now, r.cfg.ID
		sess.EmulatorLog = nil
		return nil
	})
	if err != nil {
		r.stopLocked(s)
		if errors.Is(err, state.ErrNotFound) {
			return runnerapi.Status{}, httpapi.NotFound("session %s not found", s.id)
		}
		return runnerapi.Status{}, err
	}
	if !halted {
		if _, err := proc.QMP.Execute(ctx, "cont", nil); err != nil {
			if r.died(s, proc, err) {
				// The guest crashed QEMU at once: not a failure to start,
				// the session is in error and says why.
				return r.status(s), nil
			}
			r.stopLocked(s)
			return runnerapi.Status{}, fmt.Errorf("start session %s: cont: %w", s.id, err)
		}
	}
	r.publish(events.TypeSessionStarted, updated)
	return r.status(s), nil
}

// died reports whether err, from a QMP command to p, is QEMU ending (its
// monitor closes as it exits: a guest that locks the CPU up makes QEMU
// abort while a cont or system_reset is answered) and then waits until
// watch has recorded the exit, so the caller answers with the session's
// error. s.mu is held.
func (r *Runner) died(s *session, p *qemu.Process, err error) bool {
	if !errors.Is(err, qmp.ErrClosed) {
		return false
	}
	t := time.NewTimer(r.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-p.Done():
	case <-t.C:
		return false
	}
	r.awaitRecorded(s)
	return true
}

// awaitRecorded lets watch, which needs s.mu, record the end of the
// session's process, and waits until it has. s.mu is held.
func (r *Runner) awaitRecorded(s *session) {
	s.mu.Unlock()
	r.waitRecorded(s.id)
	s.mu.Lock()
}

// pump copies the UART into the ring until the process's socket closes.
func (r *Runner) pump(s *session, p *qemu.Process, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 32<<10)
	for {
		n, err := p.Console.Read(buf)
		if n > 0 {
			s.ring.Write(buf[:n])
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// drainConsole's poke: only the pump reads, so only it can
			// tell that nothing is between the socket and the ring.
			p.Console.SetReadDeadline(time.Time{})
			select {
			case reply := <-s.drain:
				for queued(p.Console) > 0 {
					n, err := p.Console.Read(buf)
					s.ring.Write(buf[:n])
					if err != nil {
						break
					}
				}
				reply <- s.ring.End()
			default:
			}
			continue
		}
		if err != nil {
			return
		}
		if n < len(buf) && r.cfg.ConsoleGather > 0 {
			// Output after a quiet spell still arrives at once; only a
			// stream is gathered (see Settings.ConsoleGather).
			time.Sleep(r.cfg.ConsoleGather)
		}
	}
}

// watch turns the end of a process into session state: a stop we asked for
// is "stopped", a semihosting exit with status 0 is "stopped" with the
// status, anything else is "error" with the reason.
func (r *Runner) watch(s *session, p *qemu.Process) {
	<-p.Done()
	oom := r.oomReason(p)
	s.mu.Lock()
	requested, stopReason := s.stopping, s.stopReason
	if s.proc == p {
		// It ended on its own: stopLocked and replace did not see it go.
		r.harvest(s, p)
		r.setProc(s, nil)
		s.gdb.SetStub("")
	}
	// gdb's kill makes QEMU exit 0 while (or just as) the debugger goes.
	debugger, debugging := s.gdb.Recent(2 * time.Second)
	s.mu.Unlock()
	r.removeDir(p)
	// Whatever happens below, the next power on should find a spare.
	defer r.prepare(s)

	// What QEMU printed matters only when it ended on its own.
	var log []string
	if !requested {
		log = p.Log()
	}
	newState, reason, typ := model.StateStopped, "", events.TypeSessionStopped
	switch {
	case requested:
		reason = stopReason
	case oom != "":
		newState, typ, reason = model.StateError, events.TypeSessionFailed, oom
	case p.ExitCode() == 0 && debugging:
		reason = "the debugger ended the emulator (gdb kill) from " + debugger.Who
	case p.ExitCode() == 0:
		reason = "firmware exited with status 0"
	default:
		newState, typ = model.StateError, events.TypeSessionFailed
		reason = p.ExitReason()
		if code := p.ExitCode(); code > 0 {
			reason = fmt.Sprintf("firmware exited with status %d", code)
		}
		if line := crashLine(log); line != "" {
			reason += ": " + line
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	updated, err := r.state.UpdateSession(ctx, s.id, func(sess *model.Session) error {
		// A newer start may already have replaced this process.
		if sess.RunnerID != r.cfg.ID || sess.State != model.StateRunning || r.hasProc(s) {
			return errUnchanged
		}
		sess.State, sess.Reason, sess.EmulatorLog = newState, reason, log
		return nil
	})
	if err != nil {
		if !errors.Is(err, errUnchanged) && !errors.Is(err, state.ErrNotFound) {
			r.log.Error("recording emulator exit", "session", s.id, "err", err)
		}
		return
	}
	r.log.Info("emulator ended", "session", s.id, "state", newState, "reason", reason)
	r.publish(typ, updated)
}

func (r *Runner) hasProc(s *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// crashLine is the line of an emulator's log that says why it ended: the
// last "qemu: fatal:" line (a register dump follows it, so the last line
// is only a register), else the last line.
func crashLine(log []string) string {
	for i := len(log) - 1; i >= 0; i-- {
		if strings.HasPrefix(log[i], "qemu: fatal:") {
			return log[i]
		}
	}
	if len(log) == 0 {
		return ""
	}
	return log[len(log)-1]
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
	r.stopLocked(s)
}

// stopLocked stops the process and waits until watch has recorded the exit
// and the pump has drained the last output, so the caller sees final state.
func (r *Runner) stopLocked(s *session) {
	p := s.proc
	if p == nil {
		return
	}
	s.stopping = true
	s.gdb.SetStub("")
	p.Stop(r.cfg.StopGrace)
	<-s.pumped
	r.harvest(s, p)
	r.setProc(s, nil)
	r.awaitRecorded(s)
}

// waitRecorded gives watch a moment to write the stopped state, so a
// poweroff response already shows it.
func (r *Runner) waitRecorded(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		sess, err := r.state.GetSession(ctx, id)
		if err != nil || sess.State != model.StateRunning || sess.RunnerID != r.cfg.ID {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Reset resets a running machine (system_reset reloads the firmware).
func (r *Runner) Reset(ctx context.Context, id string) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; power it on first", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return httpapi.Conflict("session %s is not running; power it on first", id)
	}
	if s.last != nil && r.resetRestarts(s.last.Machine) {
		// The core cannot be reset in place: start the machine afresh with
		// the same image, as a power cycle that keeps the console.
		req := *s.last
		req.Restart = true
		s.mu.Unlock()
		_, err := r.Start(ctx, id, req)
		s.mu.Lock()
		return err
	}
	if _, err := s.proc.QMP.Execute(ctx, "system_reset", nil); err != nil {
		if r.died(s, s.proc, err) {
			return nil
		}
		return fmt.Errorf("reset session %s: %w", id, err)
	}
	return nil
}

// resetRestarts says a machine's core cannot be reset in place.
func (r *Runner) resetRestarts(machine string) bool {
	b, _ := r.caps.Backends[0].Board(machine)
	return b.ResetRestarts
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
	r.stop(s)
	s.mu.Lock()
	s.deleted = true
	r.dropSpares(s)
	s.mu.Unlock()
	s.gdb.Close()
	s.ring.Close()
	r.mu.Lock()
	delete(r.sessions, id)
	r.mu.Unlock()
	r.budget.forget(id)
	return nil
}

// Input writes to the session's UART RX.
func (r *Runner) Input(id string, data []byte) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; console input needs a running machine", id)
	}
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return httpapi.Conflict("session %s is not running; console input needs a running machine", id)
	}
	s.touch()
	if _, err := p.Console.Write(data); err != nil {
		return httpapi.Conflict("session %s: console write failed: %v", id, err)
	}
	return nil
}

func (r *Runner) status(s *session) runnerapi.Status {
	st := runnerapi.Status{SessionID: s.id, ConsoleEnd: s.ring.End()}
	if s.proc != nil {
		st.Running, st.Pid = true, s.proc.Pid()
	}
	if s.cold.p != nil {
		st.SparePid = s.cold.p.Pid()
	}
	st.GDB = s.gdbAddr
	return st
}

// fetch returns a local path of the program, downloading it into the cache
// (keyed by sha256, verified) on first use.
func (r *Runner) fetch(ctx context.Context, p runnerapi.Program) (string, error) {
	return r.fetchBlob(ctx, "program "+p.ID, p.BlobKey, p.SHA256, string(p.Format))
}

// fetchBlob returns a local copy of an artifact, cached by sha256. The
// checksum is verified before the file is used, so a corrupted blob never
// reaches QEMU.
func (r *Runner) fetchBlob(ctx context.Context, what, key, sum, ext string) (string, error) {
	if len(sum) != 64 || key == "" {
		return "", httpapi.BadRequest("%s needs a blob key and a sha256", what)
	}
	path := filepath.Join(r.cfg.Dir, "cache", sum+"."+ext)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	rc, _, err := r.blobs.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return "", httpapi.Unprocessable("%s is gone from the blob store", what)
	}
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", what, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), rc); err != nil {
		tmp.Close()
		return "", fmt.Errorf("fetch %s: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", httpapi.Unprocessable("%s is corrupted: its sha256 is %s but its manifest says %s; refused before the emulator saw it", what, got, sum)
	}
	return path, os.Rename(tmp.Name(), path)
}

func (r *Runner) publish(typ string, s model.Session) {
	if err := r.pub.Publish(context.Background(), typ, s.ID, s); err != nil {
		r.log.Warn("publish", "type", typ, "err", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// launch cold-starts a paused QEMU for req in a fresh instance directory.
func (r *Runner) launch(ctx context.Context, s *session, req runnerapi.StartRequest, incoming bool) (*qemu.Process, error) {
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
	b, _ := r.caps.Backends[0].Board(req.Machine)
	bin, err := r.backend.BinaryFor(ctx, req.Machine)
	if err != nil {
		return nil, err
	}
	cfg := qemu.Config{
		Binary: bin, Arch: b.Arch, Machine: req.Machine, Incoming: incoming, GDB: true, Dir: dir, Ethernet: b.Ethernet,
		Firmware: qemu.Firmware{Path: path, Format: req.Program.Format, LoadAddress: req.Program.LoadAddress},
	}
	if r.plugin != "" {
		// Always counted (a few percent of run time), so coverage can start
		// on a running machine: QEMU cannot load a plugin later.
		cfg.Plugins = []qemu.Plugin{{Path: r.plugin, Args: coverage.PluginArgs(dir, coverage.Options{Interval: time.Second})}}
	}
	g, err := r.group(s, lim)
	if err != nil {
		return nil, err
	}
	// Into the group before the guest runs a single instruction.
	cfg.Started = g.Add
	proc, err := qemu.Start(ctx, cfg)
	if err != nil {
		oom := g.OOMKilled()
		g.Remove()
		if oom {
			return nil, httpapi.Unprocessable("the session's memory limit (%d MB, limits.memory_mb) is below what the emulator needs: the kernel's OOM killer ended it during start-up", lim.MemoryBytes>>20)
		}
		return nil, fmt.Errorf("start session %s: %w", s.id, err)
	}
	r.track(proc, tracked{group: g, limits: lim})
	return proc, nil
}

// removeDir cleans up after an exited emulator: its instance directory
// and its cgroup.
func (r *Runner) removeDir(p *qemu.Process) {
	os.RemoveAll(p.Dir())
	r.retire(p)
}
