package emulatortest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// fakeBoards are two catalog boards, one of them with snapshots.
func fakeBoards(t *testing.T) []board.Board {
	var out []board.Board
	for _, k := range board.Known {
		switch k.Name {
		case "netduino2":
			out = append(out, k)
		case "mps2-an385":
			k.Snapshots = true
			out = append(out, k)
		}
	}
	if len(out) != 2 {
		t.Fatalf("catalog boards: %v", out)
	}
	return out
}

func fakeFirmware(t *testing.T) emulator.Firmware {
	p := filepath.Join(t.TempDir(), "fw.elf")
	if err := os.WriteFile(p, []byte("\x7fELF"), 0o600); err != nil {
		t.Fatal(err)
	}
	return emulator.Firmware{Path: p, Format: model.FormatELF}
}

// The fake passes the suite every real backend must pass.
func TestFakeConformance(t *testing.T) {
	fw := fakeFirmware(t)
	Run(t, NewFake(fakeBoards(t)...), []Case{
		{Board: "netduino2", Firmware: fw, Banner: "MS-TEST-FW netduino2 ready\r\n",
			Echo: map[string]Exchange{"uart0": {"count\r", "count="}}, Exit: "exit 3\r", ExitCode: 3},
		{Board: "mps2-an385", Firmware: fw, Banner: "MS-TEST-FW mps2-an385 ready\r\n",
			Echo: map[string]Exchange{"uart0": {"count\r", "count="}, "uart1": {"ping1\r", "ping1"}},
			Exit: "exit 0\r", Coverage: true},
	})
}

// A test of a caller ends a fake machine as an emulator crash would.
func TestFakeEnd(t *testing.T) {
	f := NewFake(fakeBoards(t)...)
	ctx := context.Background()
	m, err := f.Launch(ctx, emulator.Spec{Board: f.Boards[0], Firmware: fakeFirmware(t), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	crash := emulator.Exit{Kind: emulator.ExitCrash, Signal: "SIGABRT", Reason: "emulator crashed: qemu: fatal: Lockup"}
	f.Machines()[0].End(crash)
	<-m.Done()
	if e := m.Exit(); e.Kind != crash.Kind || e.Reason != crash.Reason {
		t.Fatalf("exit %+v", e)
	}
	if err := m.Reset(ctx); !errors.Is(err, emulator.ErrExited) {
		t.Fatalf("reset after the end: %v", err)
	}
}

func TestFakeRefuses(t *testing.T) {
	f := NewFake(fakeBoards(t)...)
	ctx := context.Background()
	if _, err := f.Launch(ctx, emulator.Spec{Board: board.Board{Name: "nosuch"}, Firmware: fakeFirmware(t)}); !errors.Is(err, emulator.ErrUnsupported) {
		t.Errorf("unknown board: %v", err)
	}
	if _, err := f.Launch(ctx, emulator.Spec{Board: f.Boards[0], Firmware: emulator.Firmware{Path: "/nonexistent"}}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing firmware: %v", err)
	}
	m, err := f.Launch(ctx, emulator.Spec{Board: f.Boards[1], Firmware: fakeFirmware(t), Incoming: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	if err := m.Resume(ctx); err == nil {
		t.Error("an Incoming machine resumed without a state")
	}
	if _, ok := m.(emulator.Counter); ok || m.DebugStub() != "" || m.Pid() != 0 {
		t.Errorf("counter %v, stub %q, pid %d without coverage, dir or process", ok, m.DebugStub(), m.Pid())
	}
}
