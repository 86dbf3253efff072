package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

func (r *Runner) board(machine string) (board.Board, error) {
	b, ok := r.caps.Backends[0].Board(machine)
	if !ok {
		return b, httpapi.Unprocessable("machine %q is not offered by this runner", machine)
	}
	if !b.Snapshots {
		return b, httpapi.Unprocessable("board %s cannot restore saved state on QEMU %s (found by probing the binary), so snapshots of it are refused", machine, r.caps.Backends[0].Version)
	}
	return b, nil
}

// Snapshot saves the running machine's state and stores it (with its
// manifest, if the request carries one). The guest is paused for the capture
// (about ten milliseconds) and then runs on.
func (r *Runner) Snapshot(ctx context.Context, id string, req runnerapi.SnapshotRequest) (runnerapi.SnapshotResult, error) {
	if _, err := r.board(req.Machine); err != nil {
		return runnerapi.SnapshotResult{}, err
	}
	if req.Manifest != nil && req.ManifestKey == "" {
		return runnerapi.SnapshotResult{}, httpapi.BadRequest("manifest_key is required with a manifest")
	}
	s, err := r.slot(id, false)
	if err != nil {
		return runnerapi.SnapshotResult{}, httpapi.Conflict("session %s is not running; only a running machine can be snapshotted", id)
	}
	s.mu.Lock()
	if err := r.usable(s); err != nil {
		s.mu.Unlock()
		return runnerapi.SnapshotResult{}, err
	}
	p := s.proc
	if p == nil {
		s.mu.Unlock()
		return runnerapi.SnapshotResult{}, httpapi.Conflict("session %s is not running; only a running machine can be snapshotted", id)
	}
	// The state is gathered in memory and hashed as it streams out of QEMU
	// (an S3 upload needs its length first anyway); the console offset is
	// read while the guest is paused.
	state := statePool.Get().(*bytes.Buffer)
	state.Reset()
	defer statePool.Put(state)
	h := sha256.New()
	res := runnerapi.SnapshotResult{EmulatorVersion: r.caps.Backends[0].Version, ManifestStored: req.Manifest != nil}
	// QEMU's capture work runs outside the guest's CPU cap (the guest is
	// paused meanwhile); the cap is back before the guest resumes.
	t, _ := r.trackedOf(p)
	capped := t.group.LiftCPU()
	defer capped()
	var cached string
	t0 := time.Now()
	resumed, err := p.SaveTo(ctx, io.MultiWriter(state, h), func() {
		res.ConsoleOffset = drainConsole(s, p.Console)
	}, func(err error) error {
		if cerr := capped(); cerr != nil {
			r.log.Error("snapshot: CPU cap not restored", "session", id, "err", cerr)
		}
		if err != nil {
			return err
		}
		res.Size, res.SHA256 = int64(state.Len()), hex.EncodeToString(h.Sum(nil))
		// The state, its manifest and the runner's cached copy (a restore
		// here needs no download) are written at once, while the guest is
		// still paused (see qemu.Process.SaveTo).
		var serr, merr error
		var wg sync.WaitGroup
		wg.Go(func() {
			serr = r.blobs.Put(ctx, req.BlobKey, bytes.NewReader(state.Bytes()), int64(state.Len()), "application/octet-stream")
		})
		if req.Manifest != nil {
			wg.Go(func() { merr = r.putManifest(ctx, req, res) })
		}
		cached = r.cacheState(state.Bytes(), res.SHA256)
		wg.Wait()
		if serr != nil {
			return fmt.Errorf("store snapshot %s: %w", req.SnapshotID, serr)
		}
		if merr != nil {
			return fmt.Errorf("store manifest of snapshot %s: %w", req.SnapshotID, merr)
		}
		return nil
	})
	t1 := time.Now()
	go func() {
		if err := <-resumed; err != nil {
			r.log.Error("guest not resumed after snapshot", "session", id, "err", err)
		}
	}()
	if err == nil {
		s.restorable = true
	}
	s.mu.Unlock()
	if err != nil {
		cctx := context.WithoutCancel(ctx)
		r.blobs.Remove(cctx, req.BlobKey)
		if req.Manifest != nil {
			r.blobs.Remove(cctx, req.ManifestKey)
		}
		if cached != "" {
			os.Remove(cached)
		}
		return runnerapi.SnapshotResult{}, fmt.Errorf("snapshot of session %s: %w", id, err)
	}
	// The next restore of this session finds a paused -incoming QEMU ready.
	r.prepare(s)
	r.log.Debug("snapshot stored", "session", id, "snapshot", req.SnapshotID, "size", res.Size, "save_ms", ms(t1.Sub(t0)))
	return res, nil
}

// statePool keeps state buffers from one snapshot to the next: a state is
// hundreds of kilobytes, and a fresh buffer costs page faults and copies
// as it grows.
var statePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// cacheState keeps a saved state in the runner's cache under its sha256,
// so a restore on this runner needs no download, and returns its path ("" if
// it could not be written: the blob store still has it).
func (r *Runner) cacheState(b []byte, sum string) string {
	dir := filepath.Join(r.cfg.Dir, "cache")
	f, err := os.CreateTemp(dir, ".snap-*")
	if err != nil {
		return ""
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	path := filepath.Join(dir, sum+".state")
	if err != nil || os.Rename(f.Name(), path) != nil {
		return ""
	}
	return path
}

// putManifest stores the request's manifest completed with res.
func (r *Runner) putManifest(ctx context.Context, req runnerapi.SnapshotRequest, res runnerapi.SnapshotResult) error {
	m := *req.Manifest
	m.Size, m.SHA256, m.EmulatorVersion, m.ConsoleOffset = res.Size, res.SHA256, res.EmulatorVersion, res.ConsoleOffset
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return r.blobs.Put(ctx, req.ManifestKey, bytes.NewReader(b), int64(len(b)), "application/json")
}

// Restore replaces the session's machine (running or not) with the saved
// state and lets it run. The state is checked against its sha256 before QEMU
// reads it, and a state from another QEMU version is refused.
func (r *Runner) Restore(ctx context.Context, id string, req runnerapi.RestoreRequest) (runnerapi.Status, error) {
	if _, err := r.board(req.Machine); err != nil {
		return runnerapi.Status{}, err
	}
	if v := r.caps.Backends[0].Version; req.EmulatorVersion != v {
		return runnerapi.Status{}, httpapi.Unprocessable("incompatible state: snapshot %s was taken with QEMU %s, this runner has QEMU %s", req.SnapshotID, req.EmulatorVersion, v)
	}
	state, err := r.fetchBlob(ctx, "snapshot "+req.SnapshotID, req.BlobKey, req.SHA256, "state")
	if err != nil {
		return runnerapi.Status{}, err
	}
	s, err := r.slot(id, true)
	if err != nil {
		return runnerapi.Status{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.usable(s); err != nil {
		return runnerapi.Status{}, err
	}
	if s.proc == nil && r.running() >= r.cfg.Capacity {
		return runnerapi.Status{}, httpapi.Errorf(429, "capacity", "runner %s is full (%d emulators)", r.cfg.ID, r.cfg.Capacity)
	}
	// The new machine is built and loaded while the old one still runs, so
	// the switch itself is only a kill and a cont.
	start := runnerapi.StartRequest{Machine: req.Machine, Program: req.Program}
	proc := r.take(&s.incoming, imageKey(start))
	if proc == nil {
		if proc, err = r.launch(ctx, s, start, true); err != nil {
			return runnerapi.Status{}, err
		}
	}
	if err := restoreFile(ctx, proc, state); err != nil {
		proc.Kill()
		<-proc.Done()
		r.removeDir(proc)
		return runnerapi.Status{}, httpapi.Unprocessable("snapshot %s did not restore: %v", req.SnapshotID, err)
	}
	r.replace(s)
	s.last, s.restorable = &start, true
	st, err := r.activate(ctx, s, proc, false)
	if err == nil {
		r.log.Info("session restored", "session", id, "snapshot", req.SnapshotID, "pid", proc.Pid())
		r.prepare(s)
	}
	return st, err
}

// replace discards the session's current machine without a graceful stop:
// its state is being replaced, so nothing of it needs to be kept. Its watch
// sees a newer process in place and records nothing. s.mu is held.
func (r *Runner) replace(s *session) {
	p := s.proc
	if p == nil {
		return
	}
	s.stopping = true
	r.harvestLive(s, p)
	p.Kill()
	<-p.Done()
	<-s.pumped
	r.setProc(s, nil)
}

func restoreFile(ctx context.Context, p *qemu.Process, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return p.RestoreFrom(ctx, f)
}

// drainConsole returns where the paused guest's output stands: the ring's
// end once the pump has moved every byte QEMU wrote to the console socket
// into it. The pump is poked out of its read to do that itself; if it does
// not answer (its QEMU is gone) within a moment, the ring's end as it is.
func drainConsole(s *session, c net.Conn) int64 {
	reply := make(chan int64, 1)
	select {
	case s.drain <- reply:
	default: // a drain that timed out left its request: take its place
		select {
		case <-s.drain:
		default:
		}
		s.drain <- reply
	}
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case end := <-reply:
		return end
	case <-time.After(200 * time.Millisecond):
		return s.ring.End()
	}
}

// queued is how many bytes wait in a socket's receive queue.
func queued(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	return n
}
