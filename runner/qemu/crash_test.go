package qemu

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// An image built for another board locks the CPU up, and QEMU aborts with
// its fatal error and a register dump: Log keeps them, where the last line
// alone would be a register.
func TestWrongBoardImageCrashLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := startELF(ctx, t, "netduino2", testFirmware(t, "mps2-an385", "fw.elf"))
	defer p.Stop(time.Second)
	// Whether the answer or the abort comes first is QEMU's race.
	p.QMP.Execute(ctx, "cont", nil)
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal("the wrong board's image did not crash QEMU")
	}
	log := p.Log()
	if p.ExitReason() != "emulator killed by signal aborted" || len(log) < 2 ||
		!strings.HasPrefix(log[0], "qemu: fatal: Lockup: can't escalate 3 to HardFault") ||
		!slices.ContainsFunc(log, func(l string) bool { return strings.Contains(l, "R15=") }) {
		t.Fatalf("%s, log %q", p.ExitReason(), log)
	}
}

// Log drops blank lines, a line cut by the tail's bound and QEMU's
// chatter of normal operation.
func TestLogLines(t *testing.T) {
	p := &Process{output: newTail(32)}
	p.output.Write([]byte("Timer with period zero, disabling\n\nqemu: fatal: x\r\n"))
	if got := p.Log(); !slices.Equal(got, []string{"qemu: fatal: x"}) {
		t.Fatalf("short output: %q", got)
	}
	p.output.Write([]byte("R00=0 R01=0\nFPSCR: 0\n"))
	if got := p.Log(); !slices.Equal(got, []string{"R00=0 R01=0", "FPSCR: 0"}) {
		t.Fatalf("bounded output: %q", got)
	}
}
