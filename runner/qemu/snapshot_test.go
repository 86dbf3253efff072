package qemu

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// TestProbeSnapshots asks the real binary which boards restore: the ones
// the tests run on do, and lm3s6965evb (an SD card assertion in 7.2) does not.
func TestProbeSnapshots(t *testing.T) {
	got := ProbeSnapshots(context.Background(), "/usr/bin/qemu-system-arm", []string{"netduino2", "mps2-an385", "lm3s6965evb"}, t.TempDir())
	if !got["netduino2"] || !got["mps2-an385"] || got["lm3s6965evb"] {
		t.Fatalf("probe: %v", got)
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
	// Everything printed up to the save; the source keeps running after it.
	src.Console.Write([]byte("x"))
	time.Sleep(100 * time.Millisecond)
	before := drain(r)
	if st, _ := src.QMP.Status(ctx); st != "running" {
		t.Fatalf("source after save: %s", st)
	}

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
	// The restored stream starts where the save was taken: no line of it is
	// from boot, and its first complete number is close to the last one
	// printed before the save (the save froze mid-stream).
	first := seqRe.FindStringSubmatch(after.String())
	m := seqRe.FindAllStringSubmatch(before, -1)
	if first == nil || len(m) == 0 {
		t.Fatalf("before %q after %q", before, after.String())
	}
	n0, _ := strconv.Atoi(m[0][1])
	n1, _ := strconv.Atoi(first[1])
	if strings.Contains(after.String(), "ready") || n1 < 100 || n1 < n0 {
		t.Fatalf("restored stream starts at %d (first after save was %d): %q", n1, n0, after.String()[:80])
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

func drain(r *bufio.Reader) string {
	var b strings.Builder
	for r.Buffered() > 0 {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			break
		}
	}
	return b.String()
}
