package emulatortest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
)

// Case is one board and firmware the suite runs a backend with.
type Case struct {
	Board    string
	Firmware emulator.Firmware
	// Banner is what the firmware prints on uart0 when it boots.
	Banner string
	// Echo is, for every port the firmware serves (uart0 at least), what
	// to send and the answer that must come back.
	Echo map[string]Exchange
	// Exit makes the firmware end the emulator with status ExitCode; ""
	// for a board whose firmware cannot (AVR has no semihosting).
	Exit     string
	ExitCode int
	// Coverage: the backend must count this board's executed code.
	Coverage bool
	// NoReset: the board cannot reset in place (board.ResetRestarts) and
	// Reset must say so with emulator.ErrUnsupported.
	NoReset bool
}

// Exchange is input for a port and what its answer contains.
type Exchange struct{ Send, Want string }

// waitLimit only bounds how long a broken backend hangs a test; nothing
// is timed.
const waitLimit = time.Minute

// quiet is how long the suite listens for output that must not come (a
// paused guest). Output after it would pass unseen: it can miss a fault,
// never invent one.
const quiet = 300 * time.Millisecond

// Run is the conformance suite: every backend must pass it for each case.
// It checks the probe offers the board; a machine launches paused (no
// output, the debug stub answers '?'), boots to the banner on Resume,
// names every UART uart0..uartN and talks both ways on each served port,
// holds input while paused, boots again on Reset and ends ExitStopped on
// Stop; Kill ends it ExitStopped too; the firmware's exit arrives as
// ExitStatus with its code; where the probe says Snapshots the machine is
// a Snapshotter whose state, restored into an Incoming machine, runs on
// without booting again; and with Coverage it is a Counter with counts.
func Run(t *testing.T, b emulator.Backend, cases []Case) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*waitLimit)
	defer cancel()
	caps, err := b.Probe(ctx)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	if caps.Name != b.Name() {
		t.Errorf("probe names the backend %q, the backend is %q", caps.Name, b.Name())
	}
	for _, c := range cases {
		t.Run(c.Board, func(t *testing.T) {
			bd, ok := caps.Board(c.Board)
			if !ok {
				t.Fatalf("the probe does not offer %s; it offers %v", c.Board, caps.BoardNames())
			}
			s := suite{t: t, b: b, c: c, board: bd}
			t.Run("Boot", s.boot)
			t.Run("Kill", s.kill)
			if c.Exit != "" {
				t.Run("ExitStatus", s.exitStatus)
			}
			t.Run("Snapshot", s.snapshot)
			t.Run("Coverage", s.coverage)
		})
	}
}

type suite struct {
	t     *testing.T
	b     emulator.Backend
	c     Case
	board board.Board
}

// launch starts a machine in a fresh short directory (unix socket paths
// are capped at 108 bytes), stopped and removed at the end of the test.
func (s suite) launch(t *testing.T, incoming, cov bool) (emulator.Machine, map[string]*Output) {
	t.Helper()
	dir, err := os.MkdirTemp("", "emu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	m, err := s.b.Launch(ctx, emulator.Spec{Board: s.board, Firmware: s.c.Firmware, Dir: dir, Incoming: incoming, Coverage: cov})
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	t.Cleanup(func() { m.Kill(); <-m.Done() })
	if m.Dir() != dir {
		t.Errorf("Dir is %q, launched in %q", m.Dir(), dir)
	}
	outs := map[string]*Output{}
	for name, c := range m.Ports() {
		outs[name] = Watch(c)
	}
	if outs["uart0"] == nil {
		t.Fatalf("no uart0 among the ports %v", names(m.Ports()))
	}
	return m, outs
}

func names(p map[string]net.Conn) []string {
	var n []string
	for k := range p {
		n = append(n, k)
	}
	return n
}

// booted launches and resumes a machine and waits for its banner.
func (s suite) booted(t *testing.T, cov bool) (emulator.Machine, map[string]*Output) {
	t.Helper()
	m, outs := s.launch(t, false, cov)
	must(t, "resume", m.Resume(t.Context()))
	outs["uart0"].Wait(t, 0, s.c.Banner)
	return m, outs
}

func (s suite) boot(t *testing.T) {
	m, outs := s.launch(t, false, false)
	ctx := t.Context()
	if len(s.board.UARTs) > 0 && len(m.Ports()) != len(s.board.UARTs) {
		t.Errorf("ports %v for the board's %d UARTs", names(m.Ports()), len(s.board.UARTs))
	}
	for i := range s.board.UARTs {
		if m.Ports()[emulator.UARTPort(i)] == nil {
			t.Errorf("no port %s among %v", emulator.UARTPort(i), names(m.Ports()))
		}
	}
	time.Sleep(quiet)
	if got := outs["uart0"].Since(0); got != "" {
		t.Fatalf("output before Resume: %q", got)
	}
	s.debugStub(t, m)

	must(t, "resume", m.Resume(ctx))
	outs["uart0"].Wait(t, 0, s.c.Banner)
	for port, ex := range s.c.Echo {
		o := outs[port]
		if o == nil {
			t.Fatalf("no port %s among %v", port, names(m.Ports()))
		}
		from := o.Len()
		if _, err := m.Ports()[port].Write([]byte(ex.Send)); err != nil {
			t.Fatalf("write %s: %v", port, err)
		}
		o.Wait(t, from, ex.Want)
	}

	ex, o := s.c.Echo["uart0"], outs["uart0"]
	must(t, "pause", m.Pause(ctx))
	from := o.Len()
	if _, err := m.Ports()["uart0"].Write([]byte(ex.Send)); err != nil {
		t.Fatalf("write while paused: %v", err)
	}
	time.Sleep(quiet)
	if got := o.Since(from); strings.Contains(got, ex.Want) {
		t.Fatalf("a paused guest answered: %q", got)
	}
	must(t, "resume after pause", m.Resume(ctx))
	o.Wait(t, from, ex.Want)

	from = o.Len()
	if err := m.Reset(ctx); errors.Is(err, emulator.ErrUnsupported) && s.c.NoReset {
		// The caller restarts such a board instead.
	} else {
		must(t, "reset", err)
		o.Wait(t, from, s.c.Banner)
	}

	if cpu, rss := m.Usage(); cpu < 0 || rss < 0 {
		t.Errorf("usage %v, %d bytes", cpu, rss)
	}
	if e := m.Exit(); e.Kind != emulator.ExitRunning {
		t.Errorf("exit of a running machine: %+v", e)
	}
	m.Stop(5 * time.Second)
	select {
	case <-m.Done():
	default:
		t.Fatal("Stop returned before the machine ended")
	}
	if e := m.Exit(); e.Kind != emulator.ExitStopped {
		t.Errorf("exit after Stop: %+v", e)
	}
	if err := m.Resume(ctx); !errors.Is(err, emulator.ErrExited) {
		t.Errorf("resume after the exit: %v, want ErrExited", err)
	}
}

// debugStub sends RSP's '?' (why did the target stop) to the machine's
// stub and wants a stop reply (S or T).
func (s suite) debugStub(t *testing.T, m emulator.Machine) {
	addr := m.DebugStub()
	if addr == "" {
		t.Fatal("no debug stub")
	}
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatalf("debug stub: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte("$?#3f")); err != nil {
		t.Fatalf("debug stub: %v", err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('$'); err != nil {
		t.Fatalf("debug stub: %v", err)
	}
	reply, err := r.ReadString('#')
	if err != nil || (reply[0] != 'S' && reply[0] != 'T') {
		t.Fatalf("debug stub answered '?' with %q, %v", reply, err)
	}
}

func (s suite) kill(t *testing.T) {
	m, _ := s.booted(t, false)
	m.Kill()
	waitDone(t, m)
	if e := m.Exit(); e.Kind != emulator.ExitStopped {
		t.Errorf("exit after Kill: %+v", e)
	}
}

func (s suite) exitStatus(t *testing.T) {
	m, _ := s.booted(t, false)
	if _, err := m.Ports()["uart0"].Write([]byte(s.c.Exit)); err != nil {
		t.Fatal(err)
	}
	waitDone(t, m)
	if e := m.Exit(); e.Kind != emulator.ExitStatus || e.Code != s.c.ExitCode {
		t.Errorf("exit after %q: %+v, want status %d", s.c.Exit, e, s.c.ExitCode)
	}
}

func (s suite) snapshot(t *testing.T) {
	if !s.board.Snapshots {
		t.Logf("the probe says %s does not snapshot", s.board.Name)
		return
	}
	src, outs := s.booted(t, false)
	snap, ok := src.(emulator.Snapshotter)
	if !ok {
		t.Fatalf("the probe says %s snapshots, but %T is no Snapshotter", s.board.Name, src)
	}
	ex := s.c.Echo["uart0"]
	var state bytes.Buffer
	paused := false
	resumed, err := snap.SaveTo(t.Context(), &state, func() { paused = true }, nil)
	must(t, "save", err)
	must(t, "resume after save", <-resumed)
	if !paused || state.Len() == 0 {
		t.Fatalf("save: paused called %v, %d bytes", paused, state.Len())
	}
	from := outs["uart0"].Len()
	src.Ports()["uart0"].Write([]byte(ex.Send))
	outs["uart0"].Wait(t, from, ex.Want)

	dst, douts := s.launch(t, true, false)
	must(t, "restore", dst.(emulator.Snapshotter).RestoreFrom(t.Context(), &state))
	must(t, "resume after restore", dst.Resume(t.Context()))
	dst.Ports()["uart0"].Write([]byte(ex.Send))
	douts["uart0"].Wait(t, 0, ex.Want)
	if got := douts["uart0"].Since(0); strings.Contains(got, s.c.Banner) {
		t.Errorf("the restored machine booted again: %q", got)
	}
}

func (s suite) coverage(t *testing.T) {
	if !s.c.Coverage {
		return
	}
	m, _ := s.booted(t, true)
	cm, ok := m.(emulator.Counter)
	if !ok {
		t.Fatalf("%T launched with Coverage is no Counter", m)
	}
	counts, err := cm.Counts(t.Context())
	must(t, "counts", err)
	if len(counts.Blocks) == 0 {
		t.Fatal("no blocks counted after the boot")
	}
}

func waitDone(t *testing.T, m emulator.Machine) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(waitLimit):
		t.Fatal("the machine did not end")
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Output records what a port prints.
type Output struct {
	mu      sync.Mutex
	buf     []byte
	err     error
	changed chan struct{}
}

// Watch reads c until it ends.
func Watch(c net.Conn) *Output {
	o := &Output{changed: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			o.mu.Lock()
			o.buf = append(o.buf, b[:n]...)
			if err != nil {
				o.err = err
			}
			close(o.changed)
			o.changed = make(chan struct{})
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

// Len is how much was read so far.
func (o *Output) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf)
}

// Since is what was read from offset from on.
func (o *Output) Since(from int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf[from:])
}

// Wait waits until what was read from offset from on contains want.
func (o *Output) Wait(t testing.TB, from int, want string) {
	t.Helper()
	limit := time.After(waitLimit)
	for {
		o.mu.Lock()
		got, err, changed := string(o.buf[from:]), o.err, o.changed
		o.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		if err != nil {
			t.Fatalf("port ended (%v) without %q; it printed %q", err, want, got)
		}
		select {
		case <-changed:
		case <-limit:
			t.Fatalf("no %q; the port printed %q", want, got)
		}
	}
}
