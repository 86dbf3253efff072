package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, src := startStreaming(t, 100)
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

// TestSaveToStream streams a running machine's state into memory: paused
// runs while the guest is paused, commit hears of the complete state while
// the guest is still paused, the source runs on, and the state restores
// (through RestoreFrom) into a machine that continues the stream.
func TestSaveToStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, src := startStreaming(t, 50)
	var state bytes.Buffer
	var pausedState, commitState string
	var committedErr = errors.New("commit not called")
	var committedLen int
	resumed, err := src.SaveTo(ctx, &state, func() {
		pausedState, _ = src.QMP.Status(ctx)
	}, func(err error) error {
		commitState, _ = src.QMP.Status(ctx)
		committedErr, committedLen = err, state.Len()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if pausedState != "paused" || commitState != "postmigrate" || committedErr != nil || committedLen != state.Len() || state.Len() == 0 {
		t.Fatalf("paused saw %q; commit saw %q, %v, %d of %d bytes", pausedState, commitState, committedErr, committedLen, state.Len())
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
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
	if err := dst.RestoreFrom(ctx, bytes.NewReader(state.Bytes())); err != nil {
		t.Fatal(err)
	}
	dst.QMP.Execute(ctx, "cont", nil)
	rr := bufio.NewReader(dst.Console)
	line, err := rr.ReadString('\n')
	line2, _ := rr.ReadString('\n')
	if err != nil || strings.Contains(line+line2, "ready") || !seqRe.MatchString(line2) {
		t.Fatalf("restored output: %q %q %v", line, line2, err)
	}
}

// TestSaveToFailingWriter ends the capture when its consumer fails: the
// error reaches commit and the caller, and the guest runs on.
func TestSaveToFailingWriter(t *testing.T) {
	src := startRunning(t)
	ctx := t.Context()
	var captured error
	resumed, err := src.SaveTo(ctx, failingWriter{}, nil, func(err error) error { captured = err; return err })
	if !errors.Is(err, errDiskFull) || !errors.Is(captured, errDiskFull) {
		t.Fatalf("SaveTo: %v; commit got: %v", err, captured)
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if st, _ := src.QMP.Status(ctx); st != "running" {
		t.Fatalf("source after a failed save: %s", st)
	}
	// The failed migration is over: the next one works.
	resumed, err = src.SaveTo(ctx, io.Discard, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-resumed
}

// TestSaveToCommitFails: a commit that cannot store the state fails the
// save, and the guest runs on.
func TestSaveToCommitFails(t *testing.T) {
	src := startRunning(t)
	resumed, err := src.SaveTo(t.Context(), io.Discard, nil, func(err error) error { return errDiskFull })
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("SaveTo: %v, want the commit's error", err)
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if st, _ := src.QMP.Status(t.Context()); st != "running" {
		t.Fatalf("source after a failed commit: %s", st)
	}
}

// TestSaveToSlowCommit: a commit slower than CommitGrace finishes with the
// guest already running again; its outcome is still SaveTo's.
func TestSaveToSlowCommit(t *testing.T) {
	src := startRunning(t)
	ctx := t.Context()
	var during string
	_, err := src.SaveTo(ctx, io.Discard, nil, func(err error) error {
		time.Sleep(3 * CommitGrace)
		during, _ = src.QMP.Status(ctx)
		return err
	})
	if err != nil || during != "running" {
		t.Fatalf("SaveTo: %v; a slow commit saw the guest %q, want running", err, during)
	}
}

// startRunning starts the test firmware on mps2-an385 and lets it run.
func startRunning(t *testing.T) *Process {
	t.Helper()
	src := startPaused(t)
	if _, err := src.QMP.Execute(t.Context(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	return src
}

// startPaused starts the test firmware on mps2-an385, paused (as Start
// leaves it), with its console drained.
func startPaused(t *testing.T) *Process {
	t.Helper()
	_, src := start(t)
	go io.Copy(io.Discard, src.Console)
	return src
}

// startStreaming starts the test firmware on mps2-an385 printing its
// sequence, and reads the banner and the given number of lines of it.
func startStreaming(t *testing.T, lines int) (Config, *Process) {
	t.Helper()
	cfg, src := start(t)
	if _, err := src.QMP.Execute(t.Context(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(src.Console)
	r.ReadString('\n') // banner
	src.Console.Write([]byte("stream\r"))
	for range lines {
		r.ReadString('\n')
	}
	return cfg, src
}

// start starts the test firmware on mps2-an385, paused, and returns its
// config (for a restore target in another directory) and process.
func start(t *testing.T) (Config, *Process) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Binary: "qemu-system-arm", Machine: "mps2-an385", Dir: sockDir(t), Firmware: Firmware{Path: testFirmware(t, "mps2-an385", "fw.elf"), Format: model.FormatELF}}
	src, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Stop(time.Second) })
	return cfg, src
}

var errDiskFull = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

// TestSaveToKeepsPausedMachinePaused: a machine that was not running (here
// never started) is saved and not resumed.
func TestSaveToKeepsPausedMachinePaused(t *testing.T) {
	src := startPaused(t)
	ctx := t.Context()
	var state bytes.Buffer
	resumed, err := src.SaveTo(ctx, &state, nil, nil)
	if err != nil || state.Len() == 0 {
		t.Fatalf("SaveTo: %v, %d bytes", err, state.Len())
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if st, _ := src.QMP.Status(ctx); st == "running" {
		t.Fatal("a machine that was not running runs after the save")
	}
}
