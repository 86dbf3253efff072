// Package gdbtest has the real parts the gdb and msctl tests drive: a
// netduino2 QEMU running the project's test firmware with its gdbstub on, a
// gdb-multiarch batch run, and a minimal RSP client for benchmarks.
package gdbtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/model"
)

// waitLimit only bounds how long a broken test hangs; nothing is timed.
const waitLimit = 30 * time.Second

// Firmware is the netduino2 test firmware ELF (make firmware).
func Firmware(tb testing.TB) string {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		// Tests run in their package directory; the build dir is at the module root.
		d, _ := os.Getwd()
		for ; d != "/" && dir == ""; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "build", "firmware")
			}
		}
	}
	p := filepath.Join(dir, "netduino2", "fw.elf")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("test firmware missing (run make firmware): %v", err)
	}
	return p
}

// Machine is a real QEMU with the test firmware, paused at the reset vector.
type Machine struct {
	*qemu.Process
	Stub string // the gdbstub's unix socket

	mu  sync.Mutex
	out bytes.Buffer
}

// Start launches QEMU (paused, as qemu.Start leaves it) and records its UART.
func Start(tb testing.TB) *Machine {
	if _, err := exec.LookPath("qemu-system-arm"); err != nil {
		tb.Fatal("qemu-system-arm is not installed (make test installs it)")
	}
	dir, err := os.MkdirTemp("/tmp", "mg")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	p, err := qemu.Start(ctx, qemu.Config{Binary: "qemu-system-arm", Machine: "netduino2", Dir: dir,
		Firmware: qemu.Firmware{Path: Firmware(tb), Format: model.FormatELF}, GDB: true})
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatal(err)
	}
	m := &Machine{Process: p, Stub: filepath.Join(dir, qemu.GDBSocket)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := p.Console.Read(buf)
			m.mu.Lock()
			m.out.Write(buf[:n])
			m.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		p.Stop(2 * time.Second)
		os.RemoveAll(dir)
	})
	return m
}

// Status is QMP query-status (running, paused, prelaunch, ...).
func (m *Machine) Status(tb testing.TB) string {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := m.QMP.Status(ctx)
	if err != nil {
		tb.Fatalf("query-status: %v", err)
	}
	return st
}

// Cont resumes the VM over QMP.
func (m *Machine) Cont(tb testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := m.QMP.Execute(ctx, "cont", nil); err != nil {
		tb.Fatalf("cont: %v", err)
	}
}

// Console is everything the UART printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.String()
}

// Type writes to the UART and waits until the console, after what it held
// before, contains want; it returns that new output.
func (m *Machine) Type(tb testing.TB, input, want string) string {
	start := len(m.Console())
	if _, err := m.Process.Console.Write([]byte(input)); err != nil {
		tb.Fatalf("console write: %v", err)
	}
	return m.WaitConsole(tb, start, want)
}

// WaitConsole waits until the output from byte from on contains want.
func (m *Machine) WaitConsole(tb testing.TB, from int, want string) string {
	deadline := time.Now().Add(waitLimit)
	for {
		out := m.Console()[from:]
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			tb.Fatalf("console never showed %q; got %q", want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GDB runs gdb-multiarch in batch mode on the test firmware against addr and
// returns its combined output and exit error. ctx bounds the run.
func GDB(ctx context.Context, tb testing.TB, addr string, cmds ...string) (string, error) {
	return GDBFor(ctx, tb, Firmware(tb), addr, cmds...)
}

// GDBFor is GDB with the symbols of elf.
func GDBFor(ctx context.Context, tb testing.TB, elf, addr string, cmds ...string) (string, error) {
	if _, err := exec.LookPath("gdb-multiarch"); err != nil {
		tb.Fatal("gdb-multiarch is not installed (make test installs it)")
	}
	args := []string{"-batch", "-nx", elf, "-ex", "set remotetimeout 20", "-ex", "target extended-remote " + addr}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "gdb-multiarch", args...).CombinedOutput()
	return string(out), err
}

// RSP is a minimal remote-protocol client, as gdb talks to QEMU: no-ack mode
// after the handshake, one request and one reply at a time.
type RSP struct {
	c     net.Conn
	r     *bufio.Reader
	noAck bool
	// MaxRead is the largest memory read QEMU allows per 'm' packet.
	MaxRead int
}

// Handshake does what gdb does first (qSupported, QStartNoAckMode, the
// target description that QEMU needs before register writes, '?').
func Handshake(c net.Conn) (*RSP, error) {
	p := &RSP{c: c, r: bufio.NewReader(c)}
	sup, err := p.Do("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=arm;vContSupported+")
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Split(sup, ";") {
		if v, ok := strings.CutPrefix(f, "PacketSize="); ok {
			n, _ := strconv.ParseInt(v, 16, 32)
			// Replies are hex, two characters a byte (QEMU answers E22 beyond).
			p.MaxRead = int(n) / 2
		}
	}
	if p.MaxRead <= 0 {
		return nil, fmt.Errorf("no PacketSize in %q", sup)
	}
	if _, err := p.Do("QStartNoAckMode"); err != nil {
		return nil, err
	}
	p.noAck = true
	if _, err := p.Do("qXfer:features:read:target.xml:0,ffb"); err != nil {
		return nil, err
	}
	if _, err := p.Do("?"); err != nil {
		return nil, err
	}
	return p, nil
}

// Do sends one packet and returns the reply's data; an "E" reply is an error.
func (p *RSP) Do(req string) (string, error) {
	if err := p.c.SetDeadline(time.Now().Add(waitLimit)); err != nil {
		return "", err
	}
	var sum byte
	for i := 0; i < len(req); i++ {
		sum += req[i]
	}
	if _, err := fmt.Fprintf(p.c, "$%s#%02x", req, sum); err != nil {
		return "", err
	}
	for {
		b, err := p.r.ReadByte()
		if err != nil {
			return "", err
		}
		if b == '$' {
			break
		}
	}
	data, err := p.r.ReadString('#')
	if err != nil {
		return "", err
	}
	if _, err := p.r.Discard(2); err != nil {
		return "", err
	}
	if !p.noAck {
		if _, err := p.c.Write([]byte{'+'}); err != nil {
			return "", err
		}
	}
	data = data[:len(data)-1]
	if len(data) == 3 && data[0] == 'E' || strings.HasPrefix(data, "E.") {
		return data, errors.New("remote error " + data)
	}
	return data, nil
}

// ReadMem reads n bytes at addr in as many 'm' packets as QEMU needs.
func (p *RSP) ReadMem(addr uint32, n int) error {
	for off := 0; off < n; off += p.MaxRead {
		size := min(p.MaxRead, n-off)
		data, err := p.Do(fmt.Sprintf("m%x,%x", addr+uint32(off), size))
		if err != nil {
			return err
		}
		if len(data) != 2*size {
			return fmt.Errorf("read %d bytes at %#x: got %d hex digits", size, addr+uint32(off), len(data))
		}
	}
	return nil
}

// Close closes the connection without detaching: the VM stays stopped.
func (p *RSP) Close() error { return p.c.Close() }

var pcInMain = regexp.MustCompile(`(?m)^pc\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <main(\+\d+)?>$`)

// Debug runs the gdb script against addr (a debugger endpoint in
// front of m, which is paused at reset): break in main, step, inspect, set
// the firmware's counter to 1234 and detach; then checks that the firmware
// runs on and its UART "count" command reports the value gdb set.
func Debug(tb testing.TB, m *Machine, addr string) {
	tb.Helper()
	out, err := GDB(context.Background(), tb, addr, "break main", "continue", "info registers pc", "next", "bt",
		"print counter", "set var counter = 1234", "print counter", "detach")
	if err != nil {
		tb.Fatalf("gdb: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Breakpoint 1, main ()",
		"#0  main () at src/main.c:",
		"$1 = 0",
		"$2 = 1234",
		"[Inferior 1 (process 1) detached]",
	} {
		if !strings.Contains(out, want) {
			tb.Fatalf("gdb output lacks %q:\n%s", want, out)
		}
	}
	if !pcInMain.MatchString(out) {
		tb.Fatalf("info registers pc is not inside main:\n%s", out)
	}
	if st := m.Status(tb); st != "running" {
		tb.Fatalf("after detach the VM is %s, want running", st)
	}
	m.WaitConsole(tb, 0, "ready\r\n")
	got := m.Type(tb, "count\r", "\r\n")
	got = got[strings.Index(got, "count=")+len("count="):]
	n, err := strconv.Atoi(got[:strings.Index(got, "\r")])
	// The counter only grows from what gdb set (SysTick adds 10 a second).
	if err != nil || n < 1234 {
		tb.Fatalf("count after set var counter = 1234: %q", got)
	}
}
