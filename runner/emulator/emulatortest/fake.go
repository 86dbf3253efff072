// Package emulatortest holds what tests of emulator backends and of their
// callers use: Fake, an in-memory backend whose machines behave like the
// project's test firmware, and Run, the conformance suite every backend
// (the fake included) must pass.
package emulatortest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/coverage"
)

// Fake is an in-memory emulator.Backend. Its machines run no code: each
// acts out the test firmware (firmware/src/main.c) on pipes. After a boot
// or a reset it prints "MS-TEST-FW <board> ready\r\n" on uart0; it echoes
// every byte on every port; on uart0 the line "count" answers
// "count=<lines so far>" and "exit N" ends it with status N. Its debug
// stub is a unix socket in the machine's directory answering RSP's '?'.
// There is no process: Pid is 0 and Spec.Started is not called (a cgroup
// hook given 0 would move the caller).
type Fake struct {
	// Boards are what Probe offers and Launch accepts.
	Boards []board.Board
	// Quiet ports do not echo: two machines linked port to port would
	// otherwise pass one byte back and forth for ever.
	Quiet []string

	mu       sync.Mutex
	machines []*Machine
}

var _ emulator.Backend = (*Fake)(nil)

// NewFake is a fake backend offering boards.
func NewFake(boards ...board.Board) *Fake { return &Fake{Boards: boards} }

// Name is "fake".
func (f *Fake) Name() string { return "fake" }

// Probe offers f.Boards.
func (f *Fake) Probe(context.Context) (board.Backend, error) {
	b := board.Backend{Name: f.Name(), Version: "1", Binary: "fake"}
	for _, k := range f.Boards {
		k.Backend = f.Name()
		b.Boards = append(b.Boards, k)
		b.Machines = append(b.Machines, k.Name)
		if !slices.Contains(b.Processors, k.CPU) {
			b.Processors = append(b.Processors, k.CPU)
		}
	}
	return b, nil
}

// Reap finds nothing: a fake leaves nothing behind.
func (f *Fake) Reap(string) bool { return false }

// Machines are the machines launched so far, oldest first.
func (f *Fake) Machines() []*Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.machines)
}

// Launch makes a paused machine for one of f.Boards. The firmware file
// must exist (it is not read).
func (f *Fake) Launch(ctx context.Context, spec emulator.Spec) (emulator.Machine, error) {
	if !slices.ContainsFunc(f.Boards, func(b board.Board) bool { return b.Name == spec.Board.Name }) {
		return nil, fmt.Errorf("%w: board %q is not a fake board", emulator.ErrUnsupported, spec.Board.Name)
	}
	if _, err := os.Stat(spec.Firmware.Path); err != nil {
		return nil, fmt.Errorf("fake: firmware: %w", err)
	}
	if spec.Record != "" {
		// What a recording holds is the backend's business; the fake's
		// is one file naming the board.
		if err := os.WriteFile(filepath.Join(spec.Record, FakeRecording), []byte(spec.Board.Name), 0o600); err != nil {
			return nil, fmt.Errorf("fake: record: %w", err)
		}
	}
	if spec.Replay != "" {
		if b, err := os.ReadFile(filepath.Join(spec.Replay, FakeRecording)); err != nil || string(b) != spec.Board.Name {
			return nil, fmt.Errorf("fake: replay: no recording of a %s in %s (%v)", spec.Board.Name, spec.Replay, err)
		}
	}
	m := &Machine{spec: spec, ports: map[string]net.Conn{}, done: make(chan struct{}), exit: emulator.Exit{Kind: emulator.ExitRunning}}
	m.cond = sync.NewCond(&m.mu)
	if spec.Dir != "" {
		if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("fake: %w", err)
		}
		sock := filepath.Join(spec.Dir, "g.sock")
		os.Remove(sock)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("fake: debug stub: %w", err)
		}
		m.stub = ln
		go m.serveStub(ln)
	}
	for i := range max(len(spec.Board.UARTs), 1) {
		user, guest := net.Pipe()
		name := emulator.UARTPort(i)
		m.ports[name] = user
		out := make(chan []byte, 1024)
		m.outs = append(m.outs, out)
		m.guests = append(m.guests, guest)
		go func() {
			for b := range out {
				if _, err := guest.Write(b); err != nil {
					return
				}
			}
		}()
		go m.serve(i, guest, !slices.Contains(f.Quiet, name))
	}
	if spec.NIC != nil {
		m.nic, m.nicGuest = net.Pipe()
	}
	f.mu.Lock()
	f.machines = append(f.machines, m)
	f.mu.Unlock()
	if spec.Coverage {
		return &countingMachine{m}, nil
	}
	return m, nil
}

// FakeRecording is the file a fake machine launched with Spec.Record
// writes, and one launched with Spec.Replay needs.
const FakeRecording = "fake.rr"

// Machine is a fake machine (see Fake).
type Machine struct {
	spec  emulator.Spec
	ports map[string]net.Conn
	stub  net.Listener

	mu       sync.Mutex
	cond     *sync.Cond
	running  bool
	booted   bool // the banner is out since the last boot or reset
	restored bool
	lines    int
	rx       map[int][]byte // what each port's guest side took in
	nic      net.Conn       // the runner's side of a linked NIC (Spec.NIC)
	nicGuest net.Conn       // the guest's side, for tests
	outs     []chan []byte
	guests   []net.Conn
	exit     emulator.Exit
	done     chan struct{}
}

var (
	_ emulator.Machine     = (*Machine)(nil)
	_ emulator.Snapshotter = (*Machine)(nil)
	_ emulator.Counter     = (*countingMachine)(nil)
)

// Spec is what the machine was launched with.
func (m *Machine) Spec() emulator.Spec { return m.spec }

// NIC is the runner's side of a machine launched with Spec.NIC, nil
// otherwise.
func (m *Machine) NIC() net.Conn { return m.nic }

// NICGuest is the guest's side of the NIC: a test writes frames there as
// the guest's driver would send them (QEMU's framing) and reads what the
// network delivered.
func (m *Machine) NICGuest() net.Conn { return m.nicGuest }

// Send makes the guest write s on port i (as firmware printing on a UART).
func (m *Machine) Send(i int, s string) { m.print(i, s) }

// Received is what the guest took in on port i so far.
func (m *Machine) Received(i int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rx[i])
}

// Running reports whether the guest runs (resumed, not paused, not ended).
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running && m.ended() == nil
}

// End makes the machine exit as e says (a crash, a signal), as if the
// emulator had ended on its own.
func (m *Machine) End(e emulator.Exit) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endLocked(e)
}

func (m *Machine) endLocked(e emulator.Exit) {
	if m.ended() != nil {
		return
	}
	m.exit = e
	m.running = false
	close(m.done)
	for _, out := range m.outs {
		close(out)
	}
	for _, g := range m.guests {
		g.Close()
	}
	if m.nicGuest != nil {
		m.nicGuest.Close()
	}
	if m.stub != nil {
		m.stub.Close()
	}
	m.cond.Broadcast()
}

// ended is ErrExited once the machine is gone; m.mu is held.
func (m *Machine) ended() error {
	select {
	case <-m.done:
		return emulator.ErrExited
	default:
		return nil
	}
}

// print queues output on port i; m.mu is held. A port nobody reads drops
// what overflows its queue.
func (m *Machine) print(i int, s string) {
	select {
	case m.outs[i] <- []byte(s):
	default:
	}
}

func (m *Machine) banner() string {
	return "MS-TEST-FW " + m.spec.Board.Name + " ready\r\n"
}

// Resume runs the guest; a machine that has not booted yet prints its
// banner. An Incoming machine needs its state first.
func (m *Machine) Resume(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ended(); err != nil {
		return err
	}
	if m.spec.Incoming && !m.restored {
		return errors.New("fake: resume: the machine waits for a restore")
	}
	m.running = true
	if !m.booted {
		m.booted = true
		m.print(0, m.banner())
	}
	m.cond.Broadcast()
	return nil
}

// Pause holds the guest: input waits until Resume.
func (m *Machine) Pause(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ended(); err != nil {
		return err
	}
	m.running = false
	return nil
}

// Reset reboots the guest: the banner comes again (at once if it runs,
// else on Resume) and the line count starts over.
func (m *Machine) Reset(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ended(); err != nil {
		return err
	}
	if m.spec.Board.ResetRestarts {
		// As QEMU's AVR boards: the caller must launch the board afresh.
		return fmt.Errorf("%w: %s cannot reset in place", emulator.ErrUnsupported, m.spec.Board.Name)
	}
	m.lines, m.booted = 0, false
	if m.running {
		m.booted = true
		m.print(0, m.banner())
	}
	return nil
}

// Stop and Kill end the machine with ExitStopped.
func (m *Machine) Stop(time.Duration) {
	m.End(emulator.Exit{Kind: emulator.ExitStopped, Reason: "stopped on request"})
}
func (m *Machine) Kill() { m.Stop(0) }

func (m *Machine) Done() <-chan struct{} { return m.done }

func (m *Machine) Exit() emulator.Exit {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exit
}

func (m *Machine) Ports() map[string]net.Conn { return m.ports }

func (m *Machine) DebugStub() string {
	if m.stub == nil {
		return ""
	}
	return m.stub.Addr().String()
}

func (m *Machine) Usage() (time.Duration, int64) { return 0, 0 }
func (m *Machine) Pid() int                      { return 0 }
func (m *Machine) Dir() string                   { return m.spec.Dir }

// serve is the guest's side of port i: echo (unless quiet), and uart0's
// line commands.
func (m *Machine) serve(i int, guest net.Conn, echo bool) {
	r := bufio.NewReader(guest)
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return
		}
		m.mu.Lock()
		for !m.running && m.ended() == nil {
			m.cond.Wait()
		}
		if m.ended() != nil {
			m.mu.Unlock()
			return
		}
		if m.rx == nil {
			m.rx = map[int][]byte{}
		}
		m.rx[i] = append(m.rx[i], c)
		if echo {
			m.print(i, string(c))
		}
		if i == 0 {
			if c == '\r' || c == '\n' {
				m.run(string(line))
				line = line[:0]
			} else {
				line = append(line, c)
			}
		}
		m.mu.Unlock()
	}
}

// run carries out a line typed on uart0; m.mu is held.
func (m *Machine) run(line string) {
	if line == "" {
		return
	}
	m.lines++
	if n, ok := strings.CutPrefix(line, "exit "); ok {
		if code, err := strconv.Atoi(n); err == nil {
			m.endLocked(emulator.Exit{Kind: emulator.ExitStatus, Code: code})
		}
		return
	}
	if line == "count" {
		m.print(0, fmt.Sprintf("count=%d\r\n", m.lines))
	}
}

// serveStub answers every RSP packet: '?' with S05 (stopped by SIGTRAP),
// anything else with the empty reply (not supported).
func (m *Machine) serveStub(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('$'); err != nil {
					return
				}
				pkt, err := r.ReadString('#')
				if err != nil {
					return
				}
				if _, err := r.Discard(2); err != nil {
					return
				}
				reply := ""
				if pkt == "?#" {
					reply = "S05"
				}
				if _, err := fmt.Fprintf(c, "+$%s#%02x", reply, checksum(reply)); err != nil {
					return
				}
			}
		}()
	}
}

func checksum(s string) byte {
	var sum byte
	for i := 0; i < len(s); i++ {
		sum += s[i]
	}
	return sum
}

const stateMagic = "fake-state v1"

// SaveTo writes the guest's state (board and line count), with the guest
// paused for paused and commit.
func (m *Machine) SaveTo(ctx context.Context, w io.Writer, paused func(), commit func(error) error) (<-chan error, error) {
	resumed := make(chan error, 1)
	resumed <- nil
	m.mu.Lock()
	if err := m.ended(); err != nil {
		m.mu.Unlock()
		return resumed, err
	}
	running := m.running
	m.running = false
	state := fmt.Sprintf("%s %s %d\n", stateMagic, m.spec.Board.Name, m.lines)
	m.mu.Unlock()
	_, err := io.WriteString(w, state)
	if paused != nil {
		paused()
	}
	if commit != nil {
		if cerr := commit(err); err == nil {
			err = cerr
		}
	}
	m.mu.Lock()
	if m.ended() == nil {
		m.running = running
		m.cond.Broadcast()
	}
	m.mu.Unlock()
	return resumed, err
}

// RestoreFrom loads a state SaveTo wrote into an Incoming machine of the
// same board; the guest stays paused, and continues without a banner.
func (m *Machine) RestoreFrom(ctx context.Context, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("fake: restore: %w", err)
	}
	var magic1, magic2, name string
	var lines int
	if _, err := fmt.Sscanf(string(b), "%s %s %s %d", &magic1, &magic2, &name, &lines); err != nil || magic1+" "+magic2 != stateMagic {
		return fmt.Errorf("fake: restore: not a fake state: %q", b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.ended() != nil:
		return m.ended()
	case !m.spec.Incoming || m.restored:
		return errors.New("fake: restore: the machine was not launched Incoming, or is restored already")
	case name != m.spec.Board.Name:
		return fmt.Errorf("fake: restore: the state is of board %s, not %s", name, m.spec.Board.Name)
	}
	m.lines, m.restored, m.booted = lines, true, true
	return nil
}

// countingMachine is a machine launched with Spec.Coverage.
type countingMachine struct{ *Machine }

// Counts is one block at the reset vector, run once.
func (m *countingMachine) Counts(context.Context) (coverage.Counts, error) {
	return coverage.Counts{Blocks: []coverage.Block{{Start: 0x100, Insns: 4, Bytes: 8, Count: 1}}}, nil
}
