package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Deps are the use cases' collaborators. Sessions runs the session use
// cases: forks create sessions exactly as POST /api/v1/sessions does.
type Deps struct {
	State     *state.Store
	Blobs     blob.Store
	Sessions  *session.Service
	Publisher events.Publisher
	Log       *slog.Logger
	// Quota counts stored state bytes against the tenant's storage quota;
	// nil is unlimited.
	Quota *quota.Quota
}

// Service runs the snapshot use cases, for the snapshots function's REST
// and CloudEvents adapters.
type Service struct {
	d Deps
}

// New returns the service.
func New(d Deps) *Service { return &Service{d: d} }

// CreateRequest is POST /api/v1/sessions/{id}/snapshots.
type CreateRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// RestoreRequest is POST /api/v1/sessions/{id}/restore.
type RestoreRequest struct {
	SnapshotID string `json:"snapshot_id"`
}

// ForkRequest is POST /api/v1/snapshots/{sid}/sessions.
type ForkRequest struct {
	Count      int    `json:"count"`
	NamePrefix string `json:"name_prefix,omitempty"`
}

// MaxFork bounds one fork request.
const MaxFork = 16

// List is a page of snapshots.
type List struct {
	Snapshots []model.Snapshot `json:"snapshots"`
	Total     int              `json:"total"`
	Page      int              `json:"page"`
	PageSize  int              `json:"page_size"`
}

// restoreLease bounds how long a dead restore can block a delete.
const restoreLease = 2 * time.Minute

func validName(n string) error {
	if n == "" || len(n) > 128 || strings.IndexFunc(n, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fail.Invalid("name is required: 1 to 128 printable characters")
	}
	return nil
}

// snapshotBoard checks up front that the session's board restores on its
// runner's QEMU, so a request that would crash later is refused now.
func (svc *Service) snapshotBoard(ctx context.Context, s model.Session) error {
	caps, err := svc.d.Sessions.Capabilities(ctx)
	if err != nil {
		return err
	}
	return boardSnapshots(caps, s)
}

// boardSnapshots refuses a session whose board cannot restore on the
// emulator caps describes.
func boardSnapshots(caps board.Capabilities, s model.Session) error {
	be, _ := caps.Backend(s.Backend)
	b, ok := be.Board(s.Machine)
	if !ok {
		return fail.Unprocessable("board %s is no longer offered", s.Machine)
	}
	if !b.Snapshots {
		var ok []string
		for _, k := range be.Boards {
			if k.Snapshots {
				ok = append(ok, k.Name)
			}
		}
		why := "its state does not restore"
		if len(b.SnapshotUnsaved) > 0 {
			why = "it does not save the state of " + strings.Join(b.SnapshotUnsaved, ", ") + " (its console UART among them), or its state does not restore"
		}
		return fail.Unprocessable("board %s cannot restore saved state on QEMU %s (probed: %s), so it cannot be snapshotted; boards that can: %s",
			s.Machine, be.Version, why, strings.Join(ok, ", "))
	}
	limit := 0
	if caps.Limits != nil && caps.Limits.Memory {
		limit = caps.Limits.DefaultMemoryMB
	}
	if s.Limits != nil && s.Limits.MemoryMB > 0 {
		limit = s.Limits.MemoryMB
	}
	if need := snapshotMemoryMB(b); limit > 0 && limit < need {
		return fail.Unprocessable("saving board %s's state makes QEMU read every page of its %d MiB of flash and RAM, more than this session's memory limit of %d MB holds (the kernel would end the emulator); create the session with limits.memory_mb of at least %d",
			b.Name, (b.Flash.Size+b.RAM.Size)>>20, limit, need)
	}
	return nil
}

// snapshotMemoryMB is the memory limit a board's emulator needs to save its
// state: QEMU's migration makes every page of the board's memory resident
// (sifive_e's 512 MiB flash window goes from nothing to all of it), on top
// of what the emulator uses running.
func snapshotMemoryMB(b board.Board) int {
	const emulatorMB = 64
	return int((b.Flash.Size+b.RAM.Size+1<<20-1)>>20) + emulatorMB
}

// Create captures a running session's machine state.
func (svc *Service) Create(ctx context.Context, sessionID string, in CreateRequest) (model.Snapshot, error) {
	return svc.create(ctx, sessionID, in, "")
}

// create captures the session's state, as a part of the system snapshot
// systemSnapshot if that is set. A paused guest (a system's node) stays
// paused.
func (svc *Service) create(ctx context.Context, sessionID string, in CreateRequest, systemSnapshot string) (model.Snapshot, error) {
	if err := validName(in.Name); err != nil {
		return model.Snapshot{}, err
	}
	if len(in.Description) > 1024 {
		return model.Snapshot{}, fail.Invalid("description is limited to 1024 characters")
	}
	t0 := time.Now()
	// Two round trips to Redis: the session, then its runner (whose
	// capabilities say whether the board restores) and program together.
	s, err := svc.d.Sessions.Owned(ctx, sessionID)
	if err != nil {
		return model.Snapshot{}, err
	}
	r, p, runErr, progErr := svc.d.State.RunnerAndProgram(ctx, s.RunnerID, s.ProgramID)
	if errors.Is(runErr, state.ErrNotFound) && s.State == model.StateRunning {
		// Its runner is gone: Get records the session as lost and says so.
		if s, err = svc.d.Sessions.Get(ctx, sessionID); err != nil {
			return model.Snapshot{}, err
		}
	}
	if runErr == nil {
		if err := boardSnapshots(r.Capabilities, s); err != nil {
			return model.Snapshot{}, err
		}
	} else if err := svc.snapshotBoard(ctx, s); err != nil {
		return model.Snapshot{}, err
	}
	if s.State != model.StateRunning {
		return model.Snapshot{}, fail.Conflict("session %s is %s; only a running session can be snapshotted", s.ID, s.State)
	}
	if err := session.Guard(s, "be snapshotted"); err != nil {
		return model.Snapshot{}, err
	}
	if progErr != nil {
		return model.Snapshot{}, fmt.Errorf("program %s of session %s: %w", s.ProgramID, s.ID, progErr)
	}
	if errors.Is(runErr, state.ErrNotFound) {
		runErr = fail.Unavailable("runner %s of session %s is gone", s.RunnerID, s.ID)
	}
	if runErr != nil {
		return model.Snapshot{}, runErr
	}
	rc, err := svc.d.Sessions.Client(r)
	if err != nil {
		return model.Snapshot{}, err
	}
	snap := model.Snapshot{
		ID: model.NewID(), Tenant: auth.Tenant(ctx), Name: in.Name, Description: in.Description, SessionID: s.ID,
		Backend: s.Backend, Machine: s.Machine, ProgramID: p.ID, ProgramSHA256: p.SHA256,
		Parent: s.SnapshotID, Deterministic: s.Deterministic, SystemSnapshotID: systemSnapshot, CreatedAt: time.Now().UTC(),
	}
	t1 := time.Now()
	// The runner writes the manifest beside the state, so both are made
	// durable at once rather than one after the other.
	res, err := rc.Snapshot(ctx, s.ID, runnerapi.SnapshotRequest{
		SnapshotID: snap.ID, BlobKey: model.SnapshotStateKey(snap.ID), Machine: s.Machine,
		Manifest: &snap, ManifestKey: model.SnapshotManifestKey(snap.ID),
	})
	if err != nil {
		return model.Snapshot{}, err
	}
	t2 := time.Now()
	snap.Size, snap.SHA256, snap.EmulatorVersion, snap.ConsoleOffset = res.Size, res.SHA256, res.EmulatorVersion, res.ConsoleOffset
	if !res.ManifestStored { // a runner from before manifests were sent along
		manifest, _ := json.MarshalIndent(snap, "", "  ")
		if err := svc.d.Blobs.Put(ctx, model.SnapshotManifestKey(snap.ID), bytes.NewReader(manifest), int64(len(manifest)), "application/json"); err != nil {
			svc.d.Blobs.Remove(context.WithoutCancel(ctx), model.SnapshotStateKey(snap.ID))
			return model.Snapshot{}, fmt.Errorf("store snapshot manifest: %w", err)
		}
	}
	// The size is known only now: it is charged to the tenant's storage
	// quota while the index is written, and a refusal undoes the save.
	var quotaErr, putErr error
	var wg2 sync.WaitGroup
	wg2.Go(func() {
		quotaErr = svc.d.Quota.Acquire(ctx, snap.Tenant, quota.Storage, quota.SnapshotKey(snap.ID), snap.Size)
	})
	wg2.Go(func() { putErr = svc.d.State.PutSnapshot(ctx, snap) })
	wg2.Wait()
	if quotaErr != nil || putErr != nil {
		bg := context.WithoutCancel(ctx)
		svc.d.State.DeleteSnapshot(bg, snap)
		svc.d.Quota.Release(bg, snap.Tenant, quota.Storage, quota.SnapshotKey(snap.ID))
		for _, k := range []string{model.SnapshotManifestKey(snap.ID), model.SnapshotStateKey(snap.ID)} {
			svc.d.Blobs.Remove(bg, k)
		}
		return model.Snapshot{}, errors.Join(quotaErr, putErr)
	}
	svc.d.Log.Debug("snapshot created", "snapshot", snap.ID, "prepare_ms", ms(t1.Sub(t0)), "runner_ms", ms(t2.Sub(t1)), "record_ms", ms(time.Since(t2)))
	svc.publish(events.TypeSnapshotCreated, snap.ID, snap, snap)
	return snap, nil
}

// Get returns a snapshot of the caller's tenant or a 404. Every operation
// on a snapshot goes through it, so one of another tenant is answered
// exactly like an unknown id and ids do not leak.
func (svc *Service) Get(ctx context.Context, id string) (model.Snapshot, error) {
	return auth.Lookup(ctx, "snapshot", id, svc.d.State.GetSnapshot, func(s model.Snapshot) string { return s.Tenant })
}

// List returns a page of a session's snapshots, or of all for "", counting
// only the caller's tenant's. The index is not per tenant, so the page is cut
// from the whole filtered list.
func (svc *Service) List(ctx context.Context, sessionID string, page, size int) (List, error) {
	if sessionID != "" {
		if _, err := svc.d.Sessions.Get(ctx, sessionID); err != nil {
			return List{}, err
		}
	}
	all, _, err := svc.d.State.ListSnapshots(ctx, sessionID, 0, math.MaxInt32)
	if err != nil {
		return List{}, err
	}
	own, total := auth.OwnPage(ctx, all, func(s model.Snapshot) string { return s.Tenant }, page, size)
	return List{Snapshots: own, Total: total, Page: page, PageSize: size}, nil
}

// Delete removes a snapshot that no restore is reading.
func (svc *Service) Delete(ctx context.Context, id string) (model.Snapshot, error) {
	snap, err := svc.Get(ctx, id)
	if err != nil {
		return snap, err
	}
	if snap.SystemSnapshotID != "" {
		return snap, fail.Conflict("snapshot %s is node state of system snapshot %s; delete the system snapshot", id, snap.SystemSnapshotID)
	}
	return snap, svc.remove(ctx, snap)
}

// remove deletes a snapshot that no restore is reading: its index entry,
// its blobs and its storage quota.
func (svc *Service) remove(ctx context.Context, snap model.Snapshot) error {
	id := snap.ID
	busy, err := svc.d.State.SnapshotInUse(ctx, id)
	if err != nil {
		return err
	}
	if busy {
		return fail.Conflict("snapshot %s is being restored right now; delete it when the restore is done", id)
	}
	if err := svc.d.State.DeleteSnapshot(ctx, snap); err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	for _, k := range []string{model.SnapshotManifestKey(id), model.SnapshotStateKey(id)} {
		if err := svc.d.Blobs.Remove(ctx, k); err != nil {
			return fmt.Errorf("remove %s: %w", k, err)
		}
	}
	if err := svc.d.Quota.Release(ctx, model.TenantOr(snap.Tenant), quota.Storage, quota.SnapshotKey(id)); err != nil {
		svc.d.Log.Warn("release storage quota", "snapshot", id, "err", err)
	}
	svc.publish(events.TypeSnapshotDeleted, snap.ID, snap, snap)
	return nil
}

// Restore brings a session back to a snapshot's state, whether it runs or
// not, on whichever runner hosts it now.
func (svc *Service) Restore(ctx context.Context, sessionID string, in RestoreRequest) (model.Session, error) {
	s, err := svc.d.Sessions.Get(ctx, sessionID)
	if err != nil {
		return s, err
	}
	if in.SnapshotID == "" {
		return s, fail.Invalid("snapshot_id is required")
	}
	snap, err := svc.Get(ctx, in.SnapshotID)
	if errors.Is(err, fail.ErrNotFound) {
		return s, fail.Unprocessable("snapshot %s does not exist", in.SnapshotID)
	}
	if err != nil {
		return s, err
	}
	rp, err := svc.restorable(ctx, s, snap)
	if err != nil {
		return s, err
	}
	release, err := svc.d.State.UseSnapshot(ctx, snap.ID, restoreLease)
	if err != nil {
		return s, err
	}
	defer release()
	rc, err := svc.d.Sessions.Runner(ctx, &s, true)
	if err != nil {
		return s, err
	}
	return svc.restoreOn(ctx, rc, s, snap, rp, false)
}

// restorable checks that snap restores into session s and returns the
// program it was taken with.
func (svc *Service) restorable(ctx context.Context, s model.Session, snap model.Snapshot) (runnerapi.Program, error) {
	if snap.Machine != s.Machine || snap.Backend != s.Backend {
		return runnerapi.Program{}, fail.Unprocessable("snapshot %s is of a %s %s; session %s is a %s %s", snap.ID, snap.Backend, snap.Machine, s.ID, s.Backend, s.Machine)
	}
	if err := svc.snapshotBoard(ctx, s); err != nil {
		return runnerapi.Program{}, err
	}
	if err := session.Guard(s, "be restored"); err != nil {
		return runnerapi.Program{}, err
	}
	rp, err := svc.d.Sessions.Program(ctx, s, snap.ProgramID)
	if err != nil {
		return rp, err
	}
	if rp.SHA256 != snap.ProgramSHA256 {
		return rp, fail.Unprocessable("program %s changed since snapshot %s was taken", snap.ProgramID, snap.ID)
	}
	return rp, nil
}

// restoreOn has runner rc replace session s's machine with snap's state
// (program rp), left paused if halted, and records it.
func (svc *Service) restoreOn(ctx context.Context, rc *runnerapi.Client, s model.Session, snap model.Snapshot, rp runnerapi.Program, halted bool) (model.Session, error) {
	if _, err := rc.Restore(ctx, s.ID, runnerapi.RestoreRequest{
		Machine: s.Machine, Program: rp, SnapshotID: snap.ID, BlobKey: model.SnapshotStateKey(snap.ID),
		SHA256: snap.SHA256, EmulatorVersion: snap.EmulatorVersion, Deterministic: s.Deterministic, VirtualTime: s.VirtualTime, Halted: halted,
	}); err != nil {
		return s, err
	}
	s, err := svc.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
		x.ProgramID, x.SnapshotID = snap.ProgramID, snap.ID
		return nil
	})
	if err != nil {
		return s, err
	}
	svc.publish(events.TypeSnapshotRestored, s.ID, snap, events.Restored{Snapshot: snap, Session: s})
	return s, nil
}

// Fork creates count new sessions, each restored from the snapshot and
// running independently. If one fails, those created by this call are
// deleted again.
func (svc *Service) Fork(ctx context.Context, id string, in ForkRequest) ([]model.Session, error) {
	if in.Count < 1 || in.Count > MaxFork {
		return nil, fail.Invalid("count must be from 1 to %d; got %d", MaxFork, in.Count)
	}
	snap, err := svc.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	prefix := in.NamePrefix
	if prefix == "" {
		prefix = snap.Name
	}
	if err := validName(prefix); err != nil {
		return nil, err
	}
	if len(prefix) > 124 {
		// Room for "-16": session names are limited to 128 characters.
		return nil, fail.Invalid("name_prefix is limited to 124 characters")
	}
	// Sessions.Create gives the new sessions the caller's tenant, which owns
	// the snapshot (Get checked) and so its source session.
	var out []model.Session
	for i := range in.Count {
		s, err := svc.d.Sessions.Create(ctx, session.CreateRequest{
			Name: fmt.Sprintf("%s-%d", prefix, i+1), Backend: snap.Backend, BoardConfig: model.BoardConfig{Board: snap.Machine},
			Deterministic: snap.Deterministic,
		})
		if err == nil {
			out = append(out, s)
			s, err = svc.Restore(ctx, s.ID, RestoreRequest{SnapshotID: id})
			out[len(out)-1] = s
		}
		if err != nil {
			for _, c := range out {
				svc.d.Sessions.Delete(context.WithoutCancel(ctx), c.ID)
			}
			return nil, err
		}
	}
	svc.publish(events.TypeSnapshotForked, snap.ID, snap, events.Forked{Snapshot: snap, Sessions: out})
	return out, nil
}

// Reindex rebuilds the Redis index from the manifests in the blob store.
// The runner writes a manifest alongside its state, so a crash mid-save can
// leave a manifest whose state never landed: it is skipped.
func (svc *Service) Reindex(ctx context.Context) (int, error) {
	objs, err := svc.d.Blobs.List(ctx, "snapshots/")
	if err != nil {
		return 0, err
	}
	stored := map[string]bool{}
	for _, o := range objs {
		stored[o.Key] = true
	}
	n := 0
	held := quota.Holdings{}
	err = blob.Manifests(ctx, svc.d.Blobs, "snapshots/", func(v model.Snapshot) error {
		if !model.ValidID(v.ID) {
			svc.d.Log.Warn("skipping snapshot manifest without a valid id", "id", v.ID)
			return nil
		}
		if !stored[model.SnapshotStateKey(v.ID)] {
			svc.d.Log.Warn("skipping snapshot manifest without its state (a save cut short)", "id", v.ID)
			return nil
		}
		n++
		held.Add(model.TenantOr(v.Tenant), quota.SnapshotKey(v.ID), v.Size)
		return svc.d.State.PutSnapshot(ctx, v)
	}, func(key string, err error) {
		svc.d.Log.Warn("skipping unreadable snapshot manifest", "key", key, "err", err)
	})
	if err != nil {
		return n, err
	}
	if err := svc.reindexSystems(ctx); err != nil {
		return n, err
	}
	// The stored states are the truth for the storage quota's snapshot
	// part (the embedded Redis starts empty).
	return n, svc.d.Quota.ReconcileHoldings(ctx, quota.Storage, quota.SnapshotKey(""), held, time.Minute)
}

// publish carries the snapshot's tenant as the event's tenant attribute, so
// a consumer behind the Broker acts for that tenant.
func (svc *Service) publish(typ, subject string, snap model.Snapshot, data any) {
	ctx := events.WithTenant(context.Background(), model.TenantOr(snap.Tenant))
	if err := svc.d.Publisher.Publish(ctx, typ, subject, data); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// Health reports what the function is connected to.
func (svc *Service) Health(ctx context.Context) (map[string]any, error) {
	v, err := svc.d.Sessions.Health(ctx)
	if err != nil {
		return nil, err
	}
	if err := svc.d.Blobs.Ping(ctx); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	v["blobs"] = svc.d.Blobs.Name()
	return v, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
