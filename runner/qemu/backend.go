package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/board"
	report "github.com/machineserver/machineserver/shared/coverage"
)

// Options configure the QEMU backend.
type Options struct {
	// Binaries are the QEMU system emulators offered, e.g.
	// "qemu-system-arm" (a name on PATH or a path). A board is run by the
	// first of them whose -machine help lists it.
	Binaries []string
	// Plugin is the coverage plugin (coverage.Locate); "" offers no
	// coverage, and a launch that asks for it fails with
	// emulator.ErrUnsupported.
	Plugin string
	// CacheDir keeps the snapshot probe's results between runs, as the
	// probe starts two QEMUs per board; "" probes afresh every time.
	CacheDir string
}

// Backend runs boards on the installed QEMU binaries.
type Backend struct {
	opts Options

	mu     sync.Mutex
	probes []Probe // what each binary answered, in Options.Binaries order
}

var _ emulator.Backend = (*Backend)(nil)

// New is the QEMU backend over the binaries in o.
func New(o Options) *Backend { return &Backend{opts: o} }

// ForRunner is the backend a runner offers: binaries, with the coverage
// plugin coverage.Locate finds when counting is wanted (none, with a
// warning, when it is missing), and the snapshot probe's results cached in
// cacheDir.
func ForRunner(binaries []string, counting bool, cacheDir string, log *slog.Logger) *Backend {
	o := Options{Binaries: binaries, CacheDir: cacheDir}
	if counting {
		var err error
		if o.Plugin, err = coverage.Locate(); err != nil {
			log.Warn("coverage unavailable", "err", err)
		}
	}
	return New(o)
}

// Name is "qemu".
func (b *Backend) Name() string { return "qemu" }

// discover asks every binary once for its machines; later calls reuse the
// answers. A binary that does not answer (not installed) is left out; only
// when none answers is it an error.
func (b *Backend) discover(ctx context.Context) ([]Probe, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.probes != nil {
		return b.probes, nil
	}
	if len(b.opts.Binaries) == 0 {
		return nil, errors.New("qemu: no binaries configured (e.g. qemu-system-arm)")
	}
	var probes []Probe
	var errs []error
	for _, bin := range b.opts.Binaries {
		p, err := Discover(ctx, bin)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		probes = append(probes, p)
	}
	if len(probes) == 0 {
		return nil, errors.Join(errs...)
	}
	b.probes = probes
	return probes, nil
}

// Probe lists the catalog boards the binaries run. Version and Binary are
// the first answering binary's; each board is offered once, by the first
// binary that lists it, which is also the one Launch runs it with.
// Snapshots and the instruction counter are probed for real (see
// ProbeSnapshot, ProbeClock); with a plugin, every board offers coverage.
func (b *Backend) Probe(ctx context.Context) (board.Backend, error) {
	probes, err := b.discover(ctx)
	if err != nil {
		return board.Backend{}, err
	}
	cache := b.opts.CacheDir
	if cache == "" {
		if cache, err = os.MkdirTemp("", "msprobe"); err != nil {
			return board.Backend{}, fmt.Errorf("qemu: %w", err)
		}
		defer os.RemoveAll(cache)
	}
	var out board.Backend
	for i, p := range probes {
		var machines []string
		for _, k := range board.Known {
			if slices.Contains(p.Machines, k.Name) && !slices.ContainsFunc(out.Boards, func(o board.Board) bool { return o.Name == k.Name }) {
				machines = append(machines, k.Name)
			}
		}
		probes := map[string]board.Probe{}
		for m, s := range ProbeSnapshots(ctx, p.Binary, machines, cache) {
			probes[m] = board.Probe{Restores: s.Restores, Unsaved: s.Unsaved}
		}
		// The clock probe runs the boards as Launch would, and Launch
		// records with a snapshot on the boards that restore one.
		snapshots := board.Build(p.Version, p.Binary, p.Machines, p.CPUs, probes).Backends[0]
		restores := map[string]bool{}
		var probed []board.Board
		for _, k := range snapshots.Boards {
			if slices.Contains(machines, k.Name) {
				probed = append(probed, k)
				restores[k.Name] = k.Snapshots
			}
		}
		for m, c := range ProbeClocks(ctx, p.Binary, probed, restores, cache) {
			pr := probes[m]
			pr.Clock, pr.Missing = c.Features, c.Missing
			probes[m] = pr
		}
		got := board.Build(p.Version, p.Binary, p.Machines, p.CPUs, probes).Backends[0]
		if i == 0 {
			out = got
			out.Boards = nil
		} else {
			out.Machines = union(out.Machines, got.Machines)
			out.Processors = union(out.Processors, got.Processors)
		}
		for _, k := range got.Boards {
			if slices.Contains(machines, k.Name) {
				out.Boards = append(out.Boards, k)
			}
		}
	}
	if b.opts.Plugin != "" {
		for i := range out.Boards {
			out.Boards[i].Features = append(slices.Clone(out.Boards[i].Features), board.FeatureCoverage)
		}
	}
	return out, nil
}

func union(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// BinaryFor is the binary that runs machine (the first that lists it).
func (b *Backend) BinaryFor(ctx context.Context, machine string) (string, error) {
	probes, err := b.discover(ctx)
	if err != nil {
		return "", err
	}
	var all []string
	for _, p := range probes {
		if slices.Contains(p.Machines, machine) {
			return p.Binary, nil
		}
		all = append(all, p.Binary)
	}
	return "", fmt.Errorf("%w: board %q is not a machine of %s", emulator.ErrUnsupported, machine, strings.Join(all, ", "))
}

// coverageInterval bounds what a killed QEMU loses of its counts.
const coverageInterval = time.Second

// Launch starts QEMU paused with every UART of the board connected (as
// emulator.UARTPort names them), its gdbstub on a unix socket in spec.Dir, the
// board's NIC isolated and, with spec.Coverage, the coverage plugin.
func (b *Backend) Launch(ctx context.Context, spec emulator.Spec) (emulator.Machine, error) {
	if spec.Coverage && b.opts.Plugin == "" {
		return nil, fmt.Errorf("%w: coverage (no plugin configured)", emulator.ErrUnsupported)
	}
	bin, err := b.BinaryFor(ctx, spec.Board.Name)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		Binary: bin, Machine: spec.Board.Name, Dir: spec.Dir, Firmware: Firmware(spec.Firmware),
		GDB: true, Ethernet: spec.Board.Ethernet, Incoming: spec.Incoming, Started: spec.Started,
		Serials: max(len(spec.Board.UARTs), 1), Arch: spec.Board.Arch,
		Clock: Clock{Deterministic: spec.Deterministic, VirtualTime: spec.VirtualTime, Record: spec.Record, Replay: spec.Replay, Snapshot: spec.Board.Snapshots},
	}
	if spec.NIC != nil {
		cfg.NIC = &NIC{MAC: spec.NIC.MAC}
	}
	if spec.Record != "" && cfg.Clock.Snapshot {
		if err := createReplayImage(ctx, spec.Record); err != nil {
			return nil, err
		}
	}
	if spec.Coverage {
		cfg.Plugins = []Plugin{{Path: b.opts.Plugin, Args: coverage.PluginArgs(spec.Dir, coverage.Options{Interval: coverageInterval})}}
	}
	p, err := Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m := &machine{p: p, ports: map[string]net.Conn{}, restartOnReset: spec.Board.ResetRestarts}
	for i, c := range p.Serials {
		m.ports[emulator.UARTPort(i)] = c
	}
	if spec.Coverage {
		return &countingMachine{m}, nil
	}
	return m, nil
}

// Reap kills the QEMU an earlier runner left in dir (KillStale).
func (b *Backend) Reap(dir string) bool { return KillStale(dir) }

// machine adapts a Process to emulator.Machine.
type machine struct {
	p     *Process
	ports map[string]net.Conn
	// requested is set once Stop or Kill was called: the exit that
	// follows is ExitStopped whatever status or signal it has.
	requested atomic.Bool
	// restartOnReset: board.Board.ResetRestarts.
	restartOnReset bool

	exitOnce sync.Once
	exit     emulator.Exit
}

var (
	_ emulator.Machine     = (*machine)(nil)
	_ emulator.Snapshotter = (*machine)(nil)
	_ emulator.Counter     = (*countingMachine)(nil)
)

func (m *machine) Resume(ctx context.Context) error { return m.do(ctx, "cont") }
func (m *machine) Pause(ctx context.Context) error  { return m.do(ctx, "stop") }
func (m *machine) Reset(ctx context.Context) error {
	if m.restartOnReset {
		return fmt.Errorf("%w: QEMU cannot reset this board's core in place; launch it again", emulator.ErrUnsupported)
	}
	return m.do(ctx, "system_reset")
}

// do runs a QMP command; on a QEMU that is gone the error is
// emulator.ErrExited.
func (m *machine) do(ctx context.Context, cmd string) error {
	_, err := m.p.QMP.Execute(ctx, cmd, nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, qmp.ErrClosed):
		// QMP closes only when QEMU goes or Stop closes it.
		return fmt.Errorf("qemu: %s: %w", cmd, emulator.ErrExited)
	}
	return fmt.Errorf("qemu: %s: %w", cmd, err)
}

func (m *machine) Stop(grace time.Duration) {
	m.requested.Store(true)
	m.p.Stop(grace)
}

func (m *machine) Kill() {
	m.requested.Store(true)
	select {
	case <-m.p.done:
		// Its pid may be another process's by now.
	default:
		m.p.Kill()
	}
}

func (m *machine) Done() <-chan struct{}                              { return m.p.Done() }
func (m *machine) Ports() map[string]net.Conn                         { return m.ports }
func (m *machine) NIC() net.Conn                                      { return m.p.NIC }
func (m *machine) DebugStub() string                                  { return filepath.Join(m.p.dir, GDBSocket) }
func (m *machine) Usage() (time.Duration, int64)                      { return m.p.Usage() }
func (m *machine) Pid() int                                           { return m.p.Pid() }
func (m *machine) Dir() string                                        { return m.p.dir }
func (m *machine) RestoreFrom(ctx context.Context, r io.Reader) error { return m.p.RestoreFrom(ctx, r) }

// SaveTo is Process.SaveTo: the commit grace is CommitGrace.
func (m *machine) SaveTo(ctx context.Context, w io.Writer, paused func(), commit func(error) error) (<-chan error, error) {
	return m.p.SaveTo(ctx, w, paused, commit)
}

// Exit says how QEMU ended: Stop or Kill make it ExitStopped; a normal
// exit is the firmware's semihosting status (QEMU exits by itself only
// so, or when gdb kills it, which reads as status 0); an abort, or any
// signal with "qemu: fatal:" in QEMU's log, is ExitCrash quoting that
// line after the signal; any other signal is ExitSignal.
func (m *machine) Exit() emulator.Exit {
	select {
	case <-m.p.done:
	default:
		return emulator.Exit{Kind: emulator.ExitRunning}
	}
	m.exitOnce.Do(func() { m.exit = m.exited() })
	return m.exit
}

// terminated is QEMU's line for a signal it ends on cleanly, e.g.
// "qemu-system-arm: terminating on signal 15 from pid 7 (kill)".
var terminated = regexp.MustCompile(`: terminating on signal (\d+)`)

func (m *machine) exited() emulator.Exit {
	if m.requested.Load() {
		return emulator.Exit{Kind: emulator.ExitStopped, Reason: "stopped on request"}
	}
	ps := m.p.cmd.ProcessState
	log := m.p.Log()
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		// QEMU turns SIGTERM, SIGINT and SIGHUP into a clean exit 0, which
		// must not read as the firmware passing.
		for _, l := range log {
			if m := terminated.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				return emulator.Exit{Kind: emulator.ExitSignal, Signal: unix.SignalName(syscall.Signal(n)), Reason: l, Log: log}
			}
		}
		return emulator.Exit{Kind: emulator.ExitStatus, Code: ps.ExitCode(), Log: log}
	}
	sig := unix.SignalName(ws.Signal())
	// The reason reads as the runner has always said it (docs/api.md).
	killed := "emulator killed by signal " + ws.Signal().String()
	fatal := ""
	for _, l := range log {
		if strings.HasPrefix(l, "qemu: fatal:") {
			fatal = l
		}
	}
	switch {
	case fatal != "":
		return emulator.Exit{Kind: emulator.ExitCrash, Signal: sig, Reason: killed + ": " + fatal, Log: log}
	case ws.Signal() == syscall.SIGABRT:
		reason := killed
		if len(log) > 0 {
			reason += ": " + log[len(log)-1]
		}
		return emulator.Exit{Kind: emulator.ExitCrash, Signal: sig, Reason: reason, Log: log}
	}
	return emulator.Exit{Kind: emulator.ExitSignal, Signal: sig, Log: log}
}

// countingMachine is a machine launched with the coverage plugin.
type countingMachine struct{ *machine }

// Counts asks the running plugin to write its counts and reads them; after
// the exit it reads what the plugin wrote last (all of it unless QEMU was
// killed, then up to coverageInterval less).
func (m *countingMachine) Counts(ctx context.Context) (report.Counts, error) {
	select {
	case <-m.p.done:
	default:
		if err := coverage.Flush(ctx, m.p.dir); err != nil {
			return report.Counts{}, err
		}
	}
	return coverage.Read(m.p.dir)
}
