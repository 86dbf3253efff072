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
	dir := filepath.Join(r.cfg.Dir, "cache")
	f, err := os.CreateTemp(dir, ".snap-*")
	if err != nil {
		s.mu.Unlock()
		return runnerapi.SnapshotResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// The state is hashed and uploaded as it streams out of QEMU, and kept
	// in the cache; the console offset is read while the guest is paused.
	pr, pw := io.Pipe()
	stored := make(chan error, 1)
	go func() {
		err := r.blobs.Put(ctx, req.BlobKey, pr, -1, "application/octet-stream")
		pr.CloseWithError(err)
		stored <- err
	}()
	h := sha256.New()
	var size counter
	res := runnerapi.SnapshotResult{EmulatorVersion: r.caps.Backends[0].Version, ManifestStored: req.Manifest != nil}
	var manifest chan error // set once the manifest is being written
	t0 := time.Now()
	err = p.SaveTo(ctx, io.MultiWriter(f, h, &size, pw), func() {
		drainConsole(s, p.Console)
		res.ConsoleOffset = s.ring.End()
	}, func(err error) {
		// Commit the state, and write its manifest beside it, while the
		// guest resumes.
		pw.CloseWithError(err)
		res.Size, res.SHA256 = int64(size), hex.EncodeToString(h.Sum(nil))
		if err == nil && req.Manifest != nil {
			manifest = make(chan error, 1)
			go func(res runnerapi.SnapshotResult) { manifest <- r.putManifest(ctx, req, res) }(res)
		}
	})
	pw.CloseWithError(err) // in case the capture never began
	t1 := time.Now()
	if err == nil {
		s.restorable = true
	}
	s.mu.Unlock()
	if serr := <-stored; err == nil && serr != nil {
		err = fmt.Errorf("store snapshot %s: %w", req.SnapshotID, serr)
	}
	if manifest != nil {
		if merr := <-manifest; err == nil && merr != nil {
			err = fmt.Errorf("store manifest of snapshot %s: %w", req.SnapshotID, merr)
		}
	}
	if err != nil {
		cctx := context.WithoutCancel(ctx)
		r.blobs.Remove(cctx, req.BlobKey)
		if req.Manifest != nil {
			r.blobs.Remove(cctx, req.ManifestKey)
		}
		return runnerapi.SnapshotResult{}, fmt.Errorf("snapshot of session %s: %w", id, err)
	}
	// The next restore of this session finds a paused -incoming QEMU ready.
	defer r.prepare(s)
	// Keep it in the cache: a restore on this runner needs no download.
	_ = os.Link(f.Name(), filepath.Join(dir, res.SHA256+".state"))
	r.log.Debug("snapshot stored", "session", id, "snapshot", req.SnapshotID, "size", res.Size,
		"save_ms", ms(t1.Sub(t0)), "store_ms", ms(time.Since(t1)))
	return res, nil
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

// counter counts the bytes written through it.
type counter int64

func (c *counter) Write(b []byte) (int, error) {
	*c += counter(len(b))
	return len(b), nil
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

// drainConsole waits (briefly) until the pump has moved every byte QEMU
// wrote to the console socket into the ring, so the offset recorded with a
// snapshot is where the paused guest's output really stands. The guest is
// paused, so nothing new arrives.
func drainConsole(s *session, c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	last := int64(-1)
	for time.Now().Before(deadline) {
		pending := 0
		raw.Control(func(fd uintptr) { pending, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		end := s.ring.End()
		if pending == 0 && end == last {
			return
		}
		last = end
		time.Sleep(500 * time.Microsecond)
	}
}
