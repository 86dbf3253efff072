package qmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// idleFirmware is a 1 KiB netduino2 flash image whose reset handler spins
// ("b ."). QEMU 7.2 needs real vectors: with an empty (zero) flash, cont
// aborts the whole process with "Lockup: can't escalate 3 to HardFault".
func idleFirmware() []byte {
	img := make([]byte, 1024)
	binary.LittleEndian.PutUint32(img[0:], 0x20020000) // initial SP: top of SRAM
	binary.LittleEndian.PutUint32(img[4:], 0x08000009) // reset: 0x08000008, Thumb
	binary.LittleEndian.PutUint16(img[8:], 0xe7fe)     // b .
	return img
}

func TestRealQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-arm")
	if err != nil {
		t.Fatalf("qemu-system-arm must be on PATH (apt-get install qemu-system-arm): %v", err)
	}
	// Not t.TempDir(): its path can push the socket past the 108-byte limit.
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fw := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(fw, idleFirmware(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "q.sock")

	// A bound on a hung QEMU, not a performance expectation.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin,
		"-M", "netduino2", "-S", "-display", "none", "-monitor", "none", "-serial", "null",
		"-qmp", "unix:"+sock+",server=on,wait=off",
		"-device", "loader,file="+fw+",addr=0x08000000")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("qemu stderr:\n%s", stderr.String())
		}
	}()

	m, err := Dial(ctx, "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	wantStatus := func(want string) {
		t.Helper()
		got, err := m.Status(ctx)
		if err != nil || got != want {
			t.Fatalf("status = %q, %v; want %q", got, err, want)
		}
	}
	run := func(command string) {
		t.Helper()
		if _, err := m.Execute(ctx, command, nil); err != nil {
			t.Fatalf("%s: %v", command, err)
		}
	}
	waitEvent := func(name string) Event {
		t.Helper()
		for {
			select {
			case ev, ok := <-m.Events():
				if !ok {
					t.Fatalf("connection ended (%v) before %s", m.Err(), name)
				}
				if ev.Name == name {
					return ev
				}
			case <-ctx.Done():
				t.Fatalf("no %s event: %v", name, ctx.Err())
			}
		}
	}

	wantStatus("prelaunch")
	run("cont")
	waitEvent("RESUME")
	wantStatus("running")
	run("stop")
	waitEvent("STOP")
	wantStatus("paused")
	run("system_reset")
	if ev := waitEvent("RESET"); !strings.Contains(string(ev.Data), "host-qmp-system-reset") {
		t.Errorf("RESET data = %s", ev.Data)
	}

	var qerr *Error
	if _, err := m.Execute(ctx, "no-such-command", nil); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want *Error CommandNotFound", err)
	}
	mtree, err := m.HumanCommand(ctx, "info mtree")
	if err != nil || !strings.Contains(mtree, "flash") {
		t.Fatalf("info mtree = %q, %v", mtree, err)
	}
	if out, err := m.HumanCommand(ctx, "no-such-hmp-command"); err != nil || !strings.Contains(out, "unknown command") {
		t.Errorf("bad HMP command = %q, %v; want the error text and no Go error", out, err)
	}

	// QEMU may close the socket before the reply is read: both outcomes are fine.
	if _, err := m.Execute(ctx, "quit", nil); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("quit: %v", err)
	}
	if ev := waitEvent("SHUTDOWN"); !strings.Contains(string(ev.Data), "host-qmp-quit") {
		t.Errorf("SHUTDOWN data = %s", ev.Data)
	}
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after quit")
	}
	if err := m.Err(); err != io.EOF {
		t.Errorf("Err after quit = %v, want io.EOF", err)
	}
	<-exited
	if waitErr != nil {
		t.Fatalf("qemu exit: %v", waitErr)
	}
}
