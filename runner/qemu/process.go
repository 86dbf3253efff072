package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// Socket and pid file names inside an instance directory; short because unix
// socket paths are capped at 108 bytes.
const (
	QMPSocket     = "q.sock"
	ConsoleSocket = "c.sock"
	GDBSocket     = "g.sock"
	// NICSocket carries a linked NIC's frames (Config.NIC).
	NICSocket = "e.sock"
	// MigrationSocket carries snapshot streams in and out.
	MigrationSocket = "m.sock"
	PidFile         = "pid"
	maxSocketPath   = 100
	// maxSerials keeps serial socket names one digit long.
	maxSerials = 10
)

// serialSocket is the socket of the i-th serial port: ConsoleSocket for the
// first, so a console-only instance looks as it always did.
func serialSocket(i int) string {
	if i == 0 {
		return ConsoleSocket
	}
	return fmt.Sprintf("c%d.sock", i)
}

// serials is how many serial ports c connects.
func (c Config) serials() int { return max(c.Serials, 1) }

// Firmware is the image QEMU loads.
type Firmware struct {
	Path   string
	Format model.Format
	// LoadAddress is where a raw binary goes.
	LoadAddress uint64
}

// Plugin is a TCG plugin to load, with its arguments (name=value).
type Plugin struct {
	Path string
	Args []string
}

// Config describes one QEMU instance.
type Config struct {
	Binary   string
	Machine  string
	Dir      string // instance directory for sockets and the pid file
	Firmware Firmware
	// GDB exposes QEMU's gdbstub on GDBSocket (a unix socket server) in Dir;
	// the runner owns every network listener and proxies to it.
	GDB bool
	// Plugins are TCG plugins (coverage).
	Plugins []Plugin
	// Ethernet is set for boards with a NIC, so it can be isolated.
	Ethernet bool
	// NIC, on a board with Ethernet, puts its NIC on a stream netdev
	// instead of the isolated user network: QEMU connects to NICSocket,
	// which Start listens on (QEMU 7.2 crashes as the stream's server
	// when its guest sends before a peer connected, and as a client it
	// connects once), and Process.NIC carries the frames (a 4-byte
	// big-endian length, then the frame without FCS).
	NIC *NIC
	// Arch is the board's architecture (board.ArchAVR changes how the
	// image is loaded and drops semihosting; "" is ARM).
	Arch string
	// Serials is how many of the board's UARTs get a connection, in
	// QEMU's -serial order (0 means 1: the console only). The others have
	// no backend: what the guest writes there is dropped.
	Serials int
	// Incoming starts QEMU waiting for a migration stream (-incoming defer),
	// to be fed with QMP migrate-incoming: a restore target.
	Incoming bool
	// Clock is how guest time advances (see Clock); the zero value is the
	// host clock.
	Clock Clock
	// Started, when set, runs right after exec with QEMU's pid, before the
	// guest can run (it starts paused): the runner puts the process into
	// its cgroup here. An error kills QEMU and fails Start.
	Started func(pid int) error `json:"-"`
}

// NIC is a linked NIC's settings.
type NIC struct {
	// MAC must be unicast and unique on its network: every mps2-an385
	// has the same default.
	MAC string
}

// Validate checks the config before anything is executed.
func (c Config) Validate() error {
	if c.Binary == "" {
		return errors.New("qemu: no binary")
	}
	if c.Machine == "" || strings.ContainsAny(c.Machine, ", \t\n") {
		return fmt.Errorf("qemu: invalid machine %q", c.Machine)
	}
	if !filepath.IsAbs(c.Dir) || strings.Contains(c.Dir, ",") {
		return fmt.Errorf("qemu: instance dir %q must be absolute and contain no commas", c.Dir)
	}
	if c.Serials < 0 || c.Serials > maxSerials {
		return fmt.Errorf("qemu: %d serial ports asked for; 0 to %d are allowed", c.Serials, maxSerials)
	}
	if n := len(filepath.Join(c.Dir, serialSocket(max(c.Serials, 1)-1))); n > maxSocketPath {
		return fmt.Errorf("qemu: socket path in %q is %d bytes; unix sockets allow about 108", c.Dir, n)
	}
	if strings.Contains(c.Firmware.Path, ",") {
		return fmt.Errorf("qemu: firmware path %q contains a comma", c.Firmware.Path)
	}
	if err := c.Clock.validate(); err != nil {
		return err
	}
	if c.NIC != nil && !c.Ethernet {
		return fmt.Errorf("qemu: board %s has no NIC to link", c.Machine)
	}
	if c.NIC != nil && !emulator.ValidMAC(c.NIC.MAC) {
		return fmt.Errorf("qemu: NIC address %q is not a unicast MAC in lowercase hex (02:00:00:00:00:01)", c.NIC.MAC)
	}
	for _, p := range c.Plugins {
		if !filepath.IsAbs(p.Path) || strings.Contains(p.Path, ",") {
			return fmt.Errorf("qemu: plugin path %q must be absolute and contain no commas", p.Path)
		}
		for _, a := range p.Args {
			if !strings.Contains(a, "=") || strings.Contains(a, ",") {
				return fmt.Errorf("qemu: plugin argument %q must be name=value without commas", a)
			}
		}
	}
	if _, err := os.Stat(c.Firmware.Path); err != nil {
		return fmt.Errorf("qemu: firmware: %w", err)
	}
	switch c.Firmware.Format {
	case model.FormatELF, model.FormatBIN, model.FormatHEX:
	default:
		return fmt.Errorf("qemu: unknown firmware format %q", c.Firmware.Format)
	}
	return nil
}

// Args is the QEMU command line (without the binary). The guest starts paused
// (-S). QMP and the console are socket clients: Start listens first and QEMU
// connects during its initialisation, so nothing polls for sockets to appear
// and no output can be written before the runner is connected.
func (c Config) Args() []string {
	a := []string{
		"-M", c.Machine,
		"-display", "none", "-monitor", "none",
		"-S",
		"-qmp", "unix:" + filepath.Join(c.Dir, QMPSocket),
	}
	for i := range c.serials() {
		id := fmt.Sprintf("ser%d", i)
		dev := "socket,id=" + id + ",path=" + filepath.Join(c.Dir, serialSocket(i))
		if c.Clock.pipes() {
			dev = "pipe,id=" + id + ",path=" + filepath.Join(c.Dir, serialPipe(i))
		}
		a = append(a, "-chardev", dev, "-serial", "chardev:"+id)
	}
	if c.Arch != board.ArchAVR {
		// AVR has no semihosting (QEMU refuses the option for it).
		a = append(a, "-semihosting-config", "enable=on,target=native")
	}
	if c.NIC != nil {
		a = append(a, "-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path="+filepath.Join(c.Dir, NICSocket),
			"-net", "nic,netdev=n0,macaddr="+c.NIC.MAC)
	} else if c.Ethernet {
		// A board with a NIC gets QEMU's default user-mode network, which
		// NATs the guest onto the runner's network. Restricted, the guest is
		// isolated; slirp stays (without it, QEMU 7.2's main loop can sleep
		// through UART input on mps2 boards).
		a = append(a, "-nic", "user,restrict=on")
	}
	if c.GDB {
		a = append(a, "-chardev", "socket,id=gdb0,path="+filepath.Join(c.Dir, GDBSocket)+",server=on,wait=off", "-gdb", "chardev:gdb0")
	}
	for _, p := range c.Plugins {
		a = append(a, "-plugin", strings.Join(append([]string{"file=" + p.Path}, p.Args...), ","))
	}
	if c.Incoming {
		a = append(a, "-incoming", "defer")
	}
	a = append(a, c.Clock.args()...)
	switch c.Firmware.Format {
	case model.FormatELF:
		if c.Arch == board.ArchAVR {
			// QEMU's AVR boards load their ELF as the flash image (-bios);
			// -kernel is ignored there and the core runs erased flash.
			a = append(a, "-bios", c.Firmware.Path)
		} else {
			a = append(a, "-kernel", c.Firmware.Path)
		}
	case model.FormatBIN:
		a = append(a, "-device", fmt.Sprintf("loader,file=%s,addr=0x%x", c.Firmware.Path, c.Firmware.LoadAddress))
	case model.FormatHEX:
		// -kernel loads HEX as raw bytes on 7.2; the generic loader parses it.
		a = append(a, "-device", "loader,file="+c.Firmware.Path)
	}
	return a
}

// Process is a running QEMU. Its lifetime is independent of the context that
// started it.
type Process struct {
	cmd *exec.Cmd
	dir string
	QMP *qmp.Monitor
	// Serials are the connected serial ports (Config.Serials of them), in
	// QEMU's order; Console is the first.
	Serials []net.Conn
	Console net.Conn
	// NIC carries a linked NIC's frames (Config.NIC); nil without one.
	NIC    net.Conn
	output *tail

	done    chan struct{}
	waitErr error
	stopMu  sync.Mutex
}

// Start execs QEMU paused and connects QMP and the console. ctx bounds only
// the start-up; on any failure the process group is killed and nothing is left.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: instance dir: %w", err)
	}
	var lns []*net.UnixListener
	defer func() {
		// Once QEMU is connected (or gone) nobody else may connect.
		for _, ln := range lns {
			ln.Close()
		}
	}()
	p := &Process{dir: cfg.Dir, output: newTail(4096), done: make(chan struct{})}
	socks := []string{QMPSocket}
	var pipes []*pipeConn
	for i := range cfg.serials() {
		if !cfg.Clock.pipes() {
			socks = append(socks, serialSocket(i))
			continue
		}
		pc, err := openPipe(cfg.Dir, serialPipe(i))
		if err != nil {
			p.closeConns()
			return nil, err
		}
		pipes = append(pipes, pc)
		p.Serials = append(p.Serials, pc)
	}
	serials := len(socks) - 1
	if cfg.NIC != nil {
		// Last, after the serial ports' listeners.
		socks = append(socks, NICSocket)
	}
	for _, f := range socks {
		path := filepath.Join(cfg.Dir, f)
		os.Remove(path)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			p.closeConns()
			return nil, fmt.Errorf("qemu: listen %s: %w", path, err)
		}
		lns = append(lns, ln)
	}
	p.cmd = exec.Command(cfg.Binary, cfg.Args()...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	// Own process group so Stop can kill QEMU and anything it spawned; die
	// with the runner so a crashed runner leaks no emulator.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.closeConns()
		return nil, fmt.Errorf("qemu: exec %s: %w", cfg.Binary, err)
	}
	_ = os.WriteFile(filepath.Join(cfg.Dir, PidFile), []byte(strconv.Itoa(p.cmd.Process.Pid)), 0o600)
	go func() {
		p.waitErr = p.cmd.Wait()
		for _, pc := range pipes {
			pc.exited()
		}
		close(p.done)
	}()
	if cfg.Started != nil {
		if err := cfg.Started(p.cmd.Process.Pid); err != nil {
			p.Kill()
			<-p.done
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}

	// Abort the connects as soon as QEMU dies (bad arguments, missing board).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-sctx.Done():
		}
	}()
	fail := func(what string, err error) (*Process, error) {
		died := false
		select {
		case <-p.done:
			died = true
		default:
			p.Kill()
			<-p.done
		}
		p.closeConns()
		out := strings.TrimSpace(p.output.String())
		if died {
			return nil, fmt.Errorf("qemu: %s during start-up: %s", p.ExitReason(), out)
		}
		return nil, fmt.Errorf("qemu: %s: %w: %s", what, err, out)
	}
	qconn, err := accept(sctx, lns[0])
	if err != nil {
		return fail("connect QMP", err)
	}
	if p.QMP, err = qmp.New(sctx, qconn); err != nil {
		return fail("QMP handshake", err)
	}
	for i, ln := range lns[1 : 1+serials] {
		c, err := accept(sctx, ln)
		if err != nil {
			return fail(fmt.Sprintf("connect serial port %d", i), err)
		}
		p.Serials = append(p.Serials, c)
	}
	if cfg.NIC != nil {
		if p.NIC, err = accept(sctx, lns[1+serials]); err != nil {
			return fail("connect the NIC", err)
		}
	}
	p.Console = p.Serials[0]
	return p, nil
}

// accept waits for QEMU's connection until ctx ends.
func accept(ctx context.Context, ln *net.UnixListener) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })
	defer stop()
	c, err := ln.Accept()
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return c, err
}

// Dir is the instance directory.
func (p *Process) Dir() string { return p.dir }

// Pid is the QEMU process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when QEMU has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until QEMU exits and returns its wait error. Safe to call from
// many goroutines.
func (p *Process) Wait() error {
	<-p.done
	return p.waitErr
}

// ExitCode is QEMU's exit status, or -1 if it was killed by a signal or has
// not exited.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// ExitReason describes how QEMU ended, for a session's error reason.
func (p *Process) ExitReason() string {
	select {
	case <-p.done:
	default:
		return "running"
	}
	ps := p.cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "emulator killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("emulator exited with status %d", ps.ExitCode())
}

// Usage is the CPU time (user+system) QEMU has used and its resident
// memory: from /proc while it runs, from its rusage once it has exited
// (resident memory is then 0).
func (p *Process) Usage() (cpu time.Duration, rss int64) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime(), 0
	default:
	}
	pid := p.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the parenthesised command name; utime and stime are
		// the 14th and 15th fields of the line, in clock ticks (100 Hz on
		// Linux, as USER_HZ is fixed for /proc).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * (time.Second / 100)
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid)); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return cpu, rss
}

// Output is the tail of QEMU's own stdout and stderr (never the UART).
func (p *Process) Output() string { return p.output.String() }

// Log is the meaningful lines of Output: without blank lines, a line cut
// by the tail's bound, and notices QEMU prints in normal operation. A
// guest that crashes QEMU leaves its fatal error here, followed by the
// register dump, e.g. "qemu: fatal: Lockup: can't escalate 3 to HardFault".
func (p *Process) Log() []string {
	out, cut := p.output.contents()
	if cut {
		// The first line is only the end of one.
		_, out, _ = strings.Cut(out, "\n")
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, " \t\r")
		if strings.TrimSpace(l) == "" || notice(l) {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// notice reports a line QEMU prints while all is well (lm3s6965evb's
// timer chatter, on every run).
func notice(line string) bool {
	return strings.HasSuffix(line, "Timer with period zero, disabling")
}

// Stop asks QEMU to quit over QMP, waits up to grace, then sends SIGTERM to
// the process group, and finally SIGKILL. It returns when QEMU is gone.
func (p *Process) Stop(grace time.Duration) {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	defer p.closeConns()
	select {
	case <-p.done:
		return
	default:
	}
	if p.QMP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		_, _ = p.QMP.Execute(ctx, "quit", nil)
		cancel()
	}
	if p.waitFor(grace) {
		return
	}
	p.signal(syscall.SIGTERM)
	if p.waitFor(grace) {
		return
	}
	p.Kill()
	<-p.done
}

// Kill sends SIGKILL to the whole process group.
func (p *Process) Kill() { p.signal(syscall.SIGKILL) }

func (p *Process) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (p *Process) waitFor(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

func (p *Process) closeConns() {
	if p.QMP != nil {
		p.QMP.Close()
	}
	for _, c := range p.Serials {
		c.Close()
	}
	if p.NIC != nil {
		p.NIC.Close()
	}
}

// KillStale kills a QEMU left behind in dir by an earlier runner (found by its
// pid file), but only if that pid still is a QEMU using this directory, so a
// recycled pid is never hit.
func KillStale(dir string) (killed bool) {
	b, err := os.ReadFile(filepath.Join(dir, PidFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "qemu-system") || !strings.Contains(string(cmdline), dir) {
		return false
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return true
}

// tail keeps the last n bytes written, for error messages.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []byte
	cut bool // bytes before buf were dropped
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.n:]...)
		t.cut = true
	}
	return len(p), nil
}

// contents is what the tail holds and whether bytes before it were dropped.
func (t *tail) contents() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf), t.cut
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
