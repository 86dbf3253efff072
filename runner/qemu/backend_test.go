package qemu

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

func testBackend(t *testing.T) *Backend {
	plugin, err := coverage.Locate()
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Binaries: []string{"qemu-system-arm"}, Plugin: plugin, CacheDir: t.TempDir()})
}

// QEMU passes the conformance suite on a board whose console is lost by a
// restore (netduino2: no snapshots) and one that restores (mps2-an385,
// whose test firmware also echoes on its second UART).
func TestBackendConformance(t *testing.T) {
	elf := func(b string) emulator.Firmware {
		return emulator.Firmware{Path: testFirmware(t, b, "fw.elf"), Format: model.FormatELF}
	}
	emulatortest.Run(t, testBackend(t), []emulatortest.Case{
		{Board: "netduino2", Firmware: elf("netduino2"), Banner: "MS-TEST-FW netduino2 ready\r\n",
			Echo: map[string]emulatortest.Exchange{"uart0": {Send: "count\r", Want: "count="}},
			Exit: "exit 3\r", ExitCode: 3, Coverage: true},
		{Board: "mps2-an385", Firmware: elf("mps2-an385"), Banner: "MS-TEST-FW mps2-an385 ready\r\n",
			Echo: map[string]emulatortest.Exchange{"uart0": {Send: "count\r", Want: "count="}, "uart1": {Send: "ping1\r", Want: "ping1"}},
			Exit: "exit 0\r", ExitCode: 0, Coverage: true},
	})
}

// The RISC-V and AVR boards pass it too, on their own binaries. AVR has
// no semihosting (no exit status) and QEMU 7.2 cannot reset its core in
// place.
func TestBackendConformanceOtherArchs(t *testing.T) {
	plugin, err := coverage.Locate()
	if err != nil {
		t.Fatal(err)
	}
	b := New(Options{Binaries: []string{"qemu-system-riscv32", "qemu-system-avr"}, Plugin: plugin, CacheDir: t.TempDir()})
	elf := func(b string) emulator.Firmware {
		return emulator.Firmware{Path: testFirmware(t, b, "fw.elf"), Format: model.FormatELF}
	}
	emulatortest.Run(t, b, []emulatortest.Case{
		{Board: "sifive_e", Firmware: elf("sifive_e"), Banner: "MS-TEST-FW sifive_e ready\r\n",
			Echo: map[string]emulatortest.Exchange{"uart0": {Send: "count\r", Want: "count="}},
			Exit: "exit 3\r", ExitCode: 3, Coverage: true},
		{Board: "arduino-uno", Firmware: elf("arduino-uno"), Banner: "MS-TEST-FW arduino-uno ready\r\n",
			Echo:    map[string]emulatortest.Exchange{"uart0": {Send: "count\r", Want: "count="}},
			NoReset: true, Coverage: true},
	})
}

// launchBoard launches a catalog board with an image of fwBoard.
func launchBoard(t *testing.T, b *Backend, name, fwBoard string) emulator.Machine {
	t.Helper()
	i := slices.IndexFunc(board.Known, func(k board.Board) bool { return k.Name == name })
	m, err := b.Launch(t.Context(), emulator.Spec{Board: board.Known[i], Dir: sockDir(t),
		Firmware: emulator.Firmware{Path: testFirmware(t, fwBoard, "fw.elf"), Format: model.FormatELF}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill(); <-m.Done() })
	return m
}

func waitExit(t *testing.T, m emulator.Machine) emulator.Exit {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("QEMU did not end")
	}
	return m.Exit()
}

// An image for another board locks the CPU up and QEMU aborts: a crash
// quoting QEMU's fatal line, with the register dump in the log.
func TestBackendExitCrash(t *testing.T) {
	m := launchBoard(t, New(Options{Binaries: []string{"qemu-system-arm"}}), "netduino2", "mps2-an385")
	m.Resume(t.Context()) // the abort may come before the answer
	e := waitExit(t, m)
	if e.Kind != emulator.ExitCrash || e.Signal != "SIGABRT" ||
		!strings.HasPrefix(e.Reason, "emulator killed by signal aborted: qemu: fatal: Lockup: can't escalate 3 to HardFault") ||
		!slices.ContainsFunc(e.Log, func(l string) bool { return strings.Contains(l, "R15=") }) {
		t.Fatalf("%+v", e)
	}
}

// A signal nobody here sent is ExitSignal, also SIGTERM, on which QEMU
// exits 0 as if the firmware had passed.
func TestBackendExitSignal(t *testing.T) {
	b := New(Options{Binaries: []string{"qemu-system-arm"}})
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		m := launchBoard(t, b, "netduino2", "netduino2")
		if err := m.Resume(t.Context()); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(m.Pid(), sig)
		if e := waitExit(t, m); e.Kind != emulator.ExitSignal || e.Signal != map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM"}[sig] || e.Passed() {
			t.Errorf("%v: %+v", sig, e)
		}
	}
}

func TestBackendRefuses(t *testing.T) {
	b := New(Options{Binaries: []string{"qemu-system-arm"}})
	fw := emulator.Firmware{Path: testFirmware(t, "netduino2", "fw.elf"), Format: model.FormatELF}
	if _, err := b.Launch(t.Context(), emulator.Spec{Board: board.Board{Name: "nosuchboard"}, Firmware: fw, Dir: sockDir(t)}); !errors.Is(err, emulator.ErrUnsupported) {
		t.Errorf("unknown board: %v", err)
	}
	if _, err := b.Launch(t.Context(), emulator.Spec{Board: board.Known[0], Firmware: fw, Dir: sockDir(t), Coverage: true}); !errors.Is(err, emulator.ErrUnsupported) {
		t.Errorf("coverage without a plugin: %v", err)
	}
	if _, err := New(Options{Binaries: []string{"qemu-system-nosuch"}}).Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "qemu-system-nosuch not found") {
		t.Errorf("no binary: %v", err)
	}
}

// Of several binaries, one that is not installed is left out and a board
// is run by the binary that lists it.
func TestBackendSeveralBinaries(t *testing.T) {
	b := New(Options{Binaries: []string{"qemu-system-nosuch", "qemu-system-arm"}, CacheDir: t.TempDir()})
	caps, err := b.Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(caps.Binary, "/qemu-system-arm") || len(caps.Boards) < 3 {
		t.Fatalf("%s: %v", caps.Binary, caps.BoardNames())
	}
	if bin, err := b.BinaryFor(t.Context(), "mps2-an385"); err != nil || bin != caps.Binary {
		t.Fatalf("mps2-an385 runs on %q, %v", bin, err)
	}
}

func TestSerialArgs(t *testing.T) {
	c := Config{Binary: "qemu-system-arm", Machine: "mps2-an385", Dir: "/tmp/d", Serials: 3, Firmware: Firmware{Path: "/f.elf", Format: model.FormatELF}}
	a := strings.Join(c.Args(), " ")
	for _, want := range []string{
		"-chardev socket,id=ser0,path=/tmp/d/c.sock -serial chardev:ser0",
		"-chardev socket,id=ser1,path=/tmp/d/c1.sock -serial chardev:ser1",
		"-chardev socket,id=ser2,path=/tmp/d/c2.sock -serial chardev:ser2",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("no %q in %s", want, a)
		}
	}
	// A recording machine's UARTs are FIFOs, which never push back.
	c.Clock.Record = "/tmp/d/rec"
	a = strings.Join(c.Args(), " ")
	if want := "-chardev pipe,id=ser2,path=/tmp/d/p2 -serial chardev:ser2"; !strings.Contains(a, want) || strings.Contains(a, "c1.sock") {
		t.Errorf("recording: no %q in %s", want, a)
	}
	// A linked NIC: the board's NIC on a stream netdev QEMU connects to,
	// with its own MAC, instead of the isolated user network.
	c.Clock.Record, c.Ethernet, c.NIC = "", true, &NIC{MAC: "02:00:00:00:00:07"}
	a = strings.Join(c.Args(), " ")
	if want := "-netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/d/e.sock -net nic,netdev=n0,macaddr=02:00:00:00:00:07"; !strings.Contains(a, want) || strings.Contains(a, "-nic user") {
		t.Errorf("linked NIC: no %q in %s", want, a)
	}
	for mac, says := range map[string]string{
		"01:00:00:00:00:07":  "not a unicast MAC", // multicast
		"02:00:00:00:00":     "not a unicast MAC",
		"02:00:00:00:00:0G":  "not a unicast MAC",
		"02:00:00:00:00:07,": "not a unicast MAC",
	} {
		c.NIC.MAC = mac
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("MAC %q: %v", mac, err)
		}
	}
	c.NIC.MAC, c.Ethernet = "02:00:00:00:00:07", false
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "has no NIC to link") {
		t.Errorf("a NIC on a board without one: %v", err)
	}
	c.NIC = nil
	c.Serials = 11
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "0 to 10 are allowed") {
		t.Errorf("11 serial ports: %v", err)
	}
}
