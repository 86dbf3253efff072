package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// snapshotBoard is the board of a snapshot or restore request, if the
// backend saves and restores its state.
func (r *Runner) snapshotBoard(machine string) (board.Board, error) {
	b, err := r.boardOf(machine)
	if err != nil {
		return b, err
	}
	if !b.Snapshots {
		return b, httpapi.Unprocessable("board %s cannot restore saved state on %s %s (found by probing the emulator), so snapshots of it are refused", machine, r.offered.Name, r.offered.Version)
	}
	return b, nil
}

// Snapshot saves the running machine's state and stores it (with its
// manifest, if the request carries one). The guest is paused for the capture
// (about ten milliseconds) and then runs on.
func (r *Runner) Snapshot(ctx context.Context, id string, req runnerapi.SnapshotRequest) (runnerapi.SnapshotResult, error) {
	if _, err := r.snapshotBoard(req.Machine); err != nil {
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
	var snap emulator.Snapshotter
	var m emulator.Machine
	if s.proc != nil {
		m = s.proc.m
		snap, _ = m.(emulator.Snapshotter)
	}
	if snap == nil {
		s.mu.Unlock()
		if m != nil {
			return runnerapi.SnapshotResult{}, httpapi.Unprocessable("the %s backend cannot save the state of session %s's machine", r.offered.Name, id)
		}
		return runnerapi.SnapshotResult{}, httpapi.Conflict("session %s is not running; only a running machine can be snapshotted", id)
	}
	// The state is gathered in memory and hashed as it streams out of the emulator
	// (an S3 upload needs its length first anyway); the console offset is
	// read while the guest is paused.
	state := statePool.Get().(*bytes.Buffer)
	state.Reset()
	defer statePool.Put(state)
	h := sha256.New()
	res := runnerapi.SnapshotResult{EmulatorVersion: r.offered.Version, ManifestStored: req.Manifest != nil}
	// The emulator's capture work runs outside the guest's CPU cap (the guest is
	// paused meanwhile); the cap is back before the guest resumes.
	t, _ := r.trackedOf(m)
	capped := t.group.LiftCPU()
	defer capped()
	var cached string
	t0 := time.Now()
	resumed, err := snap.SaveTo(ctx, io.MultiWriter(state, h), func() {
		res.ConsoleOffset = drainConsole(s, m.Ports()[consolePort])
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
		// still paused (see emulator.Snapshotter).
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
	// The next restore of this session finds a paused incoming machine ready.
	r.prepare(s)
	r.log.Debug("snapshot stored", "session", id, "snapshot", req.SnapshotID, "size", res.Size, "save_ms", ms(t1.Sub(t0)))
	return res, nil
}

// statePool keeps state buffers from one snapshot to the next: a state is
// hundreds of kilobytes, and a fresh buffer costs page faults and copies
// as it grows.
var statePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

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
// state and lets it run. The state is checked against its sha256 before the
// emulator reads it, and a state from another emulator version is refused.
func (r *Runner) Restore(ctx context.Context, id string, req runnerapi.RestoreRequest) (runnerapi.Status, error) {
	if _, err := r.snapshotBoard(req.Machine); err != nil {
		return runnerapi.Status{}, err
	}
	if v := r.offered.Version; req.EmulatorVersion != v {
		return runnerapi.Status{}, httpapi.Unprocessable("incompatible state: snapshot %s was taken with %s %s, this runner has %s %s", req.SnapshotID, r.offered.Name, req.EmulatorVersion, r.offered.Name, v)
	}
	state, err := r.fetchBlob(ctx, "snapshot "+req.SnapshotID, req.BlobKey, req.SHA256, "state")
	if err != nil {
		return runnerapi.Status{}, err
	}
	s, err := r.lockedSlot(id)
	if err != nil {
		return runnerapi.Status{}, err
	}
	defer s.mu.Unlock()
	if s.proc == nil && r.running() >= r.cfg.Capacity {
		return runnerapi.Status{}, httpapi.Errorf(429, "capacity", "runner %s is full (%d emulators)", r.cfg.ID, r.cfg.Capacity)
	}
	// The new machine is built and loaded while the old one still runs, so
	// the switch itself is only a kill and a cont.
	start := runnerapi.StartRequest{Machine: req.Machine, Program: req.Program, Deterministic: req.Deterministic, VirtualTime: req.VirtualTime}
	if s.last != nil {
		// The restored machine takes the session's place on its segment.
		start.NIC = s.last.NIC
	}
	m := r.take(&s.incoming, imageKey(start))
	if m == nil {
		if m, err = r.launch(ctx, s, start, true); err != nil {
			return runnerapi.Status{}, err
		}
	}
	if err := restoreFile(ctx, m, state); err != nil {
		r.discard(m)
		return runnerapi.Status{}, httpapi.Unprocessable("snapshot %s did not restore: %v", req.SnapshotID, err)
	}
	r.replace(s)
	r.setLast(s, &start)
	s.restorable = true
	st, err := r.activate(ctx, s, m, req.Halted)
	if err == nil {
		r.log.Info("session restored", "session", id, "snapshot", req.SnapshotID, "pid", m.Pid())
		r.prepare(s)
	}
	return st, err
}

// replace discards the session's current machine without a graceful stop:
// its state is being replaced, so nothing of it needs to be kept, and its
// watch records nothing. s.mu is held.
func (r *Runner) replace(s *session) {
	in := s.proc
	if in == nil {
		return
	}
	in.stop("", true)
	r.harvestLive(s, in.m)
	in.m.Kill()
	<-in.m.Done()
	<-in.pumped
	r.setProc(s, nil)
}

// restoreFile feeds a saved state to a machine launched incoming (one
// launched so is a Snapshotter, as only boards whose backend restores get
// this far).
func restoreFile(ctx context.Context, m emulator.Machine, path string) error {
	snap, ok := m.(emulator.Snapshotter)
	if !ok {
		return fmt.Errorf("%w: restoring state", emulator.ErrUnsupported)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return snap.RestoreFrom(ctx, f)
}
