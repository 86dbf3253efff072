package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
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
	// RecordInputGap is how long input to a machine being recorded waits
	// for the echo of a byte before it sends the next (see pacedInput). On
	// mps2-an385, whose idle guest wakes ten times a second, a fixed 250 ms
	// kept every byte with the host's load average at 12; 100 ms lost some
	// there, 20 ms most even idle.
	RecordInputGap time.Duration `envconfig:"MS_RECORD_INPUT_GAP" default:"1s"`
	StopGrace      time.Duration `envconfig:"MS_STOP_GRACE" default:"2s"`
	// Prelaunch keeps a paused emulator ready for each stopped session that
	// has a program, so power on is a resume instead of a cold start.
	Prelaunch bool `envconfig:"MS_PRELAUNCH" default:"true"`
	// Spares bounds those paused emulators (a session that used snapshots has
	// two): past it, the spares of the least recently used sessions go,
	// and their next power on or restore is a cold start. 0 keeps none.
	Spares int `envconfig:"MS_RUNNER_SPARES" default:"16"`
	// GDBListen is the address each session's debugger port binds to (port
	// 0: one ephemeral port per session); GDBAdvertise is the host name
	// reported to users (default: the listen host, or the hostname when
	// listening on all interfaces).
	GDBListen string `envconfig:"MS_GDB_LISTEN" default:"127.0.0.1"`
	// Coverage makes every emulator count executed code (QEMU: the plugin
	// found through MS_COVERAGE_PLUGIN or build/plugin); main reads it when
	// it builds the backend, and a backend without it offers no board
	// coverage.
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
	// Backend runs the boards (main builds the QEMU one; tests a fake).
	Backend emulator.Backend
	// Quota counts stored recordings against their tenant's storage; nil
	// is unlimited.
	Quota *quota.Quota
}

// Runner hosts emulators.
type Runner struct {
	cfg   Config
	state *state.Store
	blobs blob.Store
	pub   events.Publisher
	log   *slog.Logger
	caps  board.Capabilities
	// backend runs the boards; offered is what its probe found (the one
	// backend the capabilities document), and coverage says whether any
	// board counts executed code.
	backend  emulator.Backend
	offered  board.Backend
	coverage bool
	start    time.Time

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
	procs       map[emulator.Machine]tracked
	exitedCPU   time.Duration
	dropMetrics func()
	idleDone    chan struct{}
	// loadChanged asks Run to refresh the registration (its running count).
	loadChanged chan struct{}
	// budget bounds the spares (spares.go).
	budget *spareBudget
	// links join sessions' ports (links.go), segments their NICs
	// (segments.go); under mu.
	links    map[string]*hostLink
	segments map[string]*segment
	// clocks keep systems' virtual clocks together (clocks.go); under mu.
	clocks map[string]*hostClock
}

// session is one session's emulator slot. Its console rings outlive
// machines: each UART's history persists across power cycles until the
// session is deleted.
type session struct {
	id string
	// ring is uart0's, the console; ports holds every port's (console.go).
	ring  *console.Ring
	ports *portRings
	// gdb is the session's debugger access; it outlives machines like the
	// ring, and points at whichever machine is the session's.
	gdb     *gdb.Endpoint
	gdbAddr string
	mu      sync.Mutex // serialises start/stop/reset/delete
	proc    *instance
	// drain carries a request to uart0's pump to move everything the
	// emulator has written so far into the ring, answered with its end.
	drain chan chan int64
	// Spares are paused machines already loaded with last's image
	// (Prelaunch); restorable marks a session that used snapshots, so it
	// gets an incoming spare too.
	cold, incoming spare
	cov            covState
	restorable     bool
	last           *runnerapi.StartRequest
	gen            int // numbers instance directories, so a spare and the active machine never share one
	deleted        bool
	// limits are the session's own caps (from start or prepare), kept for
	// restores, whose requests carry none.
	limits *model.Limits
	// tape and replaying are what the machine being started records or
	// whether it replays, until activate hands them to its instance.
	tape      *taping
	replaying *replay
	// active (unix ns) and watchers feed the idle timeout.
	active   atomic.Int64
	watchers atomic.Int32
}

// imageKey says whether a spare can serve a start request.
func imageKey(req runnerapi.StartRequest) string {
	mac := ""
	if req.NIC != nil {
		mac = req.NIC.MAC
	}
	return fmt.Sprintf("%s|%s|%s|%x|%t|%t|%s", req.Machine, req.Program.SHA256, req.Program.Format, req.Program.LoadAddress, req.Deterministic, req.VirtualTime, mac)
}

// New probes the backend, reconciles sessions a previous incarnation left, and
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
	if cfg.Backend == nil {
		return nil, errors.New("host: no emulator backend configured")
	}
	offered, err := cfg.Backend.Probe(ctx)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg: cfg, state: st, blobs: blobs, pub: pub, log: log.With("runner", cfg.ID),
		backend:  cfg.Backend,
		offered:  offered,
		caps:     board.Document(offered),
		start:    time.Now().UTC(),
		sessions: map[string]*session{},
		deleted:  map[string]time.Time{},
		procs:    map[emulator.Machine]tracked{},
		idleDone: make(chan struct{}), loadChanged: make(chan struct{}, 1),
		budget: newSpareBudget(),
	}
	// A backend that can count does so for the boards it says, and the
	// runner offers coverage if any board has it.
	r.coverage = slices.ContainsFunc(offered.Boards, counts)
	r.openLimits()
	if r.coverage {
		r.caps.Features = append(slices.Clone(r.caps.Features), "coverage")
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

// Capabilities is what this runner's backend offers.
func (r *Runner) Capabilities() board.Capabilities { return r.caps }

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
	ring := console.NewRing(r.cfg.ConsoleBytes)
	s = &session{id: id, ring: ring, ports: newPortRings(ring, r.cfg.ConsoleBytes), gdb: gdb.New(r.log.With("session", id)), drain: make(chan chan int64, 1)}
	s.gdb.OnLink(r.debuggerEvents(id))
	addr, err := s.gdb.ListenTCP(net.JoinHostPort(r.cfg.GDBListen, "0"), nil)
	if err != nil {
		return nil, fmt.Errorf("debugger port for session %s: %w", id, err)
	}
	s.gdbAddr = net.JoinHostPort(r.gdbHost(), strconv.Itoa(addr.(*net.TCPAddr).Port))
	r.sessions[id] = s
	return s, nil
}

// counts says whether the backend counts the board's executed code.
func counts(b board.Board) bool { return slices.Contains(b.Features, "coverage") }

// boardOf is one of the boards the backend offers.
func (r *Runner) boardOf(machine string) (board.Board, error) {
	b, ok := r.offered.Board(machine)
	if !ok {
		return b, httpapi.Unprocessable("machine %q is not offered by this runner (%s offers %s)", machine, r.offered.Name, strings.Join(r.offered.BoardNames(), ", "))
	}
	return b, nil
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

// lockedSlot is the session's slot (created if need be), locked and
// usable; the caller unlocks s.mu.
func (r *Runner) lockedSlot(id string) (*session, error) {
	s, err := r.slot(id, true)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if err := r.usable(s); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return s, nil
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

func (r *Runner) status(s *session) runnerapi.Status {
	st := runnerapi.Status{SessionID: s.id, ConsoleEnd: s.ring.End()}
	if s.proc != nil {
		st.Running, st.Pid = true, s.proc.m.Pid()
	}
	if s.cold.m != nil {
		st.SparePid = s.cold.m.Pid()
	}
	st.GDB = s.gdbAddr
	return st
}

func (r *Runner) publish(typ string, s model.Session) {
	if err := r.pub.Publish(events.WithTenant(context.Background(), model.TenantOr(s.Tenant)), typ, s.ID, s); err != nil {
		r.log.Warn("publish", "type", typ, "err", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
