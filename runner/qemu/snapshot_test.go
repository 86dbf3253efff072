package qemu

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// TestProbeSnapshots asks the real binary which boards restore and what
// they lose: lm3s6965evb does not restore at all (an SD card assertion in
// 7.2), netduino2 restores without its USART (the STM32F2 USART has no
// migration state in 7.2), mps2-an385 keeps its UART.
func TestProbeSnapshots(t *testing.T) {
	got := ProbeSnapshots(context.Background(), "/usr/bin/qemu-system-arm", []string{"netduino2", "mps2-an385", "lm3s6965evb"}, t.TempDir())
	if !got["mps2-an385"].Restores || slices.Contains(got["mps2-an385"].Unsaved, "cmsdk-apb-uart") {
		t.Errorf("mps2-an385: %+v", got["mps2-an385"])
	}
	if got["lm3s6965evb"].Restores {
		t.Errorf("lm3s6965evb restores: %+v", got["lm3s6965evb"])
	}
	if !slices.Contains(got["netduino2"].Unsaved, "stm32f2xx-usart") {
		t.Errorf("netduino2: %+v", got["netduino2"])
	}
}

var seqRe = regexp.MustCompile(`seq=(\d+)\r\n`)

// TestSaveRestoreContinues saves a streaming firmware and restores it into a
// new process: the sequence goes on from where the save cut it.
func TestSaveRestoreContinues(t *testing.T) {
	fw := testFirmware(t, "mps2-an385", "fw.elf")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Binary: "qemu-system-arm", Machine: "mps2-an385", Dir: sockDir(t), Firmware: Firmware{Path: fw, Format: model.FormatELF}}
	src, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop(time.Second)
	src.QMP.Execute(ctx, "cont", nil)
	r := bufio.NewReader(src.Console)
	r.ReadString('\n') // banner
	src.Console.Write([]byte("stream\r"))
	for i := 0; i < 100; i++ {
		r.ReadString('\n')
	}
	state := filepath.Join(sockDir(t), "s.state")
	if err := src.Save(ctx, state, nil); err != nil {
		t.Fatal(err)
	}
	// The source keeps running after the save.
	if st, _ := src.QMP.Status(ctx); st != "running" {
		t.Fatalf("source after save: %s", st)
	}
	src.Console.Write([]byte("x"))

	cfg.Dir, cfg.Incoming = sockDir(t), true
	dst, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Stop(time.Second)
	if err := dst.Restore(ctx, state); err != nil {
		t.Fatal(err)
	}
	dst.QMP.Execute(ctx, "cont", nil)
	rr := bufio.NewReader(dst.Console)
	var after strings.Builder
	for after.Len() < 200 {
		line, err := rr.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		after.WriteString(line)
	}
	// The restored stream goes on from the saved state (past the 100 lines
	// read before the save, not from boot) and without a gap.
	var seq []int
	for _, m := range seqRe.FindAllStringSubmatch(after.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		seq = append(seq, n)
	}
	if strings.Contains(after.String(), "ready") || len(seq) < 2 || seq[0] < 100 {
		t.Fatalf("restored output: %q", after.String())
	}
	for i := 1; i < len(seq); i++ {
		if seq[i] != seq[i-1]+1 {
			t.Fatalf("restored stream skips from %d to %d", seq[i-1], seq[i])
		}
	}
	os.WriteFile(state, []byte("garbage"), 0o600)
	cfg.Dir = sockDir(t)
	bad, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Kill()
	if err := bad.Restore(ctx, state); err == nil {
		t.Fatal("garbage state restored")
	}
}
