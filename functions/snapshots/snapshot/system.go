package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// SystemList is a page of system snapshots.
type SystemList struct {
	Snapshots []model.SystemSnapshot `json:"system_snapshots"`
	Total     int                    `json:"total"`
	Page      int                    `json:"page"`
	PageSize  int                    `json:"page_size"`
}

// SystemForkRequest is POST /api/v1/system-snapshots/{sid}/systems.
type SystemForkRequest struct {
	// Name is the new system's; "" takes the snapshot's system's.
	Name string `json:"name,omitempty"`
}

// CreateSystem saves a running system at one point: every node is paused
// (in parallel, within a millisecond or so of each other), each node's
// state is saved as a snapshot of its own while all stay paused, and the
// nodes are resumed together. The manifest keeps the system's definition
// with its links' faults. A board that cannot be snapshotted is refused
// before anything pauses, naming its node.
func (svc *Service) CreateSystem(ctx context.Context, systemID string, in CreateRequest) (model.SystemSnapshot, error) {
	if err := validName(in.Name); err != nil {
		return model.SystemSnapshot{}, err
	}
	if len(in.Description) > 1024 {
		return model.SystemSnapshot{}, fail.Invalid("description is limited to 1024 characters")
	}
	sys, err := svc.d.Sessions.System(ctx, systemID)
	if err != nil {
		return model.SystemSnapshot{}, err
	}
	// Each node's part is named "<name>/<node>", checked here so a bad
	// name never pauses the system.
	for _, n := range sys.Nodes {
		if err := validName(in.Name + "/" + n.Name); err != nil {
			return model.SystemSnapshot{}, fail.Invalid("name %q with /%s appended (its node's part) must be at most 128 printable characters", in.Name, n.Name)
		}
	}
	if err := svc.systemBoards(ctx, sys); err != nil {
		return model.SystemSnapshot{}, err
	}
	sys, ss, resume, err := svc.d.Sessions.PauseSystem(ctx, systemID)
	if err != nil {
		return model.SystemSnapshot{}, err
	}
	t0 := time.Now()
	v := model.SystemSnapshot{
		ID: model.NewID(), Tenant: auth.Tenant(ctx), Name: in.Name, Description: in.Description, SystemID: sys.ID,
		Spec: specOf(sys, ss), CreatedAt: time.Now().UTC(),
	}
	// Each node's save is a migration of its own emulator: in parallel,
	// the pause lasts about as long as the slowest.
	parts := make([]model.Snapshot, len(ss))
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Go(func() {
			parts[i], errs[i] = svc.create(ctx, s.ID, CreateRequest{Name: in.Name + "/" + sys.Nodes[i].Name, Description: in.Description}, v.ID)
			errs[i] = session.About("node "+sys.Nodes[i].Name, errs[i])
		})
	}
	wg.Wait()
	resumeErr := resume()
	v.PausedMS = ms(time.Since(t0))
	err = errors.Join(errs...)
	if err == nil && resumeErr != nil {
		err = fmt.Errorf("resume the nodes after the capture: %w", resumeErr)
	}
	if err == nil {
		for i, p := range parts {
			v.Nodes = append(v.Nodes, model.SystemSnapshotNode{Name: sys.Nodes[i].Name, Machine: p.Machine, SnapshotID: p.ID})
			v.Size += p.Size
		}
		err = svc.putSystem(ctx, v)
	}
	if err != nil {
		for _, p := range parts {
			if p.ID != "" {
				if rerr := svc.remove(context.WithoutCancel(ctx), p); rerr != nil {
					svc.d.Log.Warn("remove a node snapshot of a failed system snapshot", "snapshot", p.ID, "err", rerr)
				}
			}
		}
		return model.SystemSnapshot{}, err
	}
	svc.d.Log.Info("system snapshot created", "system", sys.ID, "snapshot", v.ID, "nodes", len(v.Nodes), "paused_ms", v.PausedMS)
	svc.publishSystem(events.TypeSystemSnapshotCreated, v.ID, v, v)
	return v, nil
}

// systemBoards refuses a system with a node whose board cannot be
// snapshotted, naming the node.
func (svc *Service) systemBoards(ctx context.Context, sys model.System) error {
	caps, err := svc.d.Sessions.Capabilities(ctx)
	if err != nil {
		return err
	}
	for _, n := range sys.Nodes {
		s, err := svc.d.Sessions.Get(ctx, n.SessionID)
		if err == nil {
			err = boardSnapshots(caps, s)
		}
		if err != nil {
			return session.About("node "+n.Name, err)
		}
	}
	return nil
}

// specOf is what recreates sys: its nodes as their sessions are now, its
// links with their faults now.
func specOf(sys model.System, ss []model.Session) model.SystemSpec {
	spec := model.SystemSpec{Name: sys.Name, Time: sys.Time, Seed: sys.Seed}
	for i, n := range sys.Nodes {
		s := ss[i]
		spec.Nodes = append(spec.Nodes, model.NodeSpec{Name: n.Name, Backend: s.Backend, BoardConfig: s.BoardConfig, ProgramID: s.ProgramID, Limits: s.Limits})
	}
	for _, l := range sys.Links {
		f := l.Faults
		spec.Links = append(spec.Links, model.LinkSpec{Name: l.Name, Type: l.Type, Ends: l.Ends, Nodes: l.Nodes, Faults: &f})
	}
	return spec
}

// putSystem stores the manifest (from which Reindex rebuilds the index)
// and indexes it.
func (svc *Service) putSystem(ctx context.Context, v model.SystemSnapshot) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	key := model.SystemSnapshotManifestKey(v.ID)
	if err := svc.d.Blobs.Put(ctx, key, bytes.NewReader(b), int64(len(b)), "application/json"); err != nil {
		return fmt.Errorf("store system snapshot manifest: %w", err)
	}
	if err := svc.d.State.PutSystemSnapshot(ctx, v); err != nil {
		svc.d.Blobs.Remove(context.WithoutCancel(ctx), key)
		return err
	}
	return nil
}

// reindexSystems rebuilds the system snapshot index from the manifests.
func (svc *Service) reindexSystems(ctx context.Context) error {
	return blob.Manifests(ctx, svc.d.Blobs, "system-snapshots/", func(v model.SystemSnapshot) error {
		if !model.ValidID(v.ID) {
			svc.d.Log.Warn("skipping system snapshot manifest without a valid id", "id", v.ID)
			return nil
		}
		return svc.d.State.PutSystemSnapshot(ctx, v)
	}, func(key string, err error) {
		svc.d.Log.Warn("skipping unreadable system snapshot manifest", "key", key, "err", err)
	})
}

// GetSystem returns a system snapshot of the caller's tenant or a 404.
func (svc *Service) GetSystem(ctx context.Context, id string) (model.SystemSnapshot, error) {
	return auth.Lookup(ctx, "system snapshot", id, svc.d.State.GetSystemSnapshot, func(v model.SystemSnapshot) string { return v.Tenant })
}

// ListSystem returns a page of a system's snapshots, or of all for "",
// counting only the caller's tenant's.
func (svc *Service) ListSystem(ctx context.Context, systemID string, page, size int) (SystemList, error) {
	if systemID != "" {
		if _, err := svc.d.Sessions.System(ctx, systemID); err != nil {
			return SystemList{}, err
		}
	}
	all, _, err := svc.d.State.ListSystemSnapshots(ctx, 0, math.MaxInt32)
	if err != nil {
		return SystemList{}, err
	}
	if systemID != "" {
		all = slices.DeleteFunc(all, func(v model.SystemSnapshot) bool { return v.SystemID != systemID })
	}
	own, total := auth.OwnPage(ctx, all, func(v model.SystemSnapshot) string { return v.Tenant }, page, size)
	if own == nil {
		own = []model.SystemSnapshot{}
	}
	return SystemList{Snapshots: own, Total: total, Page: page, PageSize: size}, nil
}

// DeleteSystem removes a system snapshot and its nodes' states. A node
// state being restored right now makes it a 409, with nothing removed.
func (svc *Service) DeleteSystem(ctx context.Context, id string) (model.SystemSnapshot, error) {
	v, err := svc.GetSystem(ctx, id)
	if err != nil {
		return v, err
	}
	for _, n := range v.Nodes {
		busy, err := svc.d.State.SnapshotInUse(ctx, n.SnapshotID)
		if err != nil {
			return v, err
		}
		if busy {
			return v, fail.Conflict("system snapshot %s is being restored right now (node %s); delete it when the restore is done", id, n.Name)
		}
	}
	for _, n := range v.Nodes {
		snap, err := svc.d.State.GetSnapshot(ctx, n.SnapshotID)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err == nil {
			err = svc.remove(ctx, snap)
		}
		if err != nil {
			return v, session.About("node "+n.Name, err)
		}
	}
	if err := svc.d.State.DeleteSystemSnapshot(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return v, err
	}
	if err := svc.d.Blobs.Remove(ctx, model.SystemSnapshotManifestKey(id)); err != nil {
		return v, fmt.Errorf("remove the manifest of system snapshot %s: %w", id, err)
	}
	svc.publishSystem(events.TypeSystemSnapshotDeleted, v.ID, v, v)
	return v, nil
}

// RestoreSystem brings a system back to a system snapshot, running or
// not: its running nodes are paused and unlinked, every node's machine is
// replaced by its saved state (paused), the links are put back with the
// faults they had then, and every node resumes at once. The system must
// have the snapshot's nodes (names and boards).
func (svc *Service) RestoreSystem(ctx context.Context, systemID string, in RestoreRequest) (model.System, error) {
	sys, err := svc.d.Sessions.System(ctx, systemID)
	if err != nil {
		return sys, err
	}
	if in.SnapshotID == "" {
		return sys, fail.Invalid("snapshot_id is required")
	}
	v, err := svc.GetSystem(ctx, in.SnapshotID)
	if errors.Is(err, fail.ErrNotFound) {
		return sys, fail.Unprocessable("system snapshot %s does not exist", in.SnapshotID)
	}
	if err != nil {
		return sys, err
	}
	if err := sameNodes(sys, v); err != nil {
		return sys, err
	}
	// Every node's state is checked, and held against deletion, before any
	// machine is touched.
	snaps := make([]model.Snapshot, len(sys.Nodes))
	progs := make([]runnerapi.Program, len(sys.Nodes))
	for i, n := range sys.Nodes {
		part := nodeOf(v, n.Name)
		snap, err := svc.d.State.GetSnapshot(ctx, part.SnapshotID)
		if errors.Is(err, state.ErrNotFound) {
			return sys, fail.Unprocessable("system snapshot %s lost the state of node %s (snapshot %s)", v.ID, n.Name, part.SnapshotID)
		}
		if err != nil {
			return sys, err
		}
		s, err := svc.d.Sessions.Get(ctx, n.SessionID)
		if err == nil {
			progs[i], err = svc.restorable(ctx, s, snap)
		}
		if err != nil {
			return sys, session.About("node "+n.Name, err)
		}
		release, err := svc.d.State.UseSnapshot(ctx, snap.ID, restoreLease)
		if err != nil {
			return sys, err
		}
		defer release()
		snaps[i] = snap
	}
	// The links carry the faults they had when the state was taken.
	if sys, err = svc.d.State.UpdateSystem(ctx, sys.ID, func(x *model.System) error {
		for i, l := range x.Links {
			for _, sl := range v.Spec.Links {
				if sl.Name == l.Name && sl.Faults != nil {
					x.Links[i].Faults = *sl.Faults
				}
			}
		}
		return nil
	}); err != nil {
		return sys, err
	}
	sys, err = svc.d.Sessions.StartSystem(ctx, sys, true, func(ctx context.Context, rc *runnerapi.Client, i int, s model.Session) error {
		_, err := svc.restoreOn(ctx, rc, s, snaps[i], progs[i], true)
		return err
	})
	if err != nil {
		return sys, err
	}
	svc.publishSystem(events.TypeSystemRestored, sys.ID, v, events.SystemRestored{Snapshot: v, System: sys})
	return sys, nil
}

// sameNodes refuses a system whose nodes are not the snapshot's.
func sameNodes(sys model.System, v model.SystemSnapshot) error {
	describe := func(names, machines []string) string {
		out := make([]string, len(names))
		for i := range names {
			out[i] = names[i] + " (" + machines[i] + ")"
		}
		return strings.Join(out, ", ")
	}
	var sn, sm, vn, vm []string
	for _, n := range sys.Nodes {
		sn, sm = append(sn, n.Name), append(sm, n.Machine)
	}
	for _, n := range v.Nodes {
		vn, vm = append(vn, n.Name), append(vm, n.Machine)
	}
	ok := len(sn) == len(vn)
	for i := 0; ok && i < len(sn); i++ {
		n := nodeOf(v, sn[i])
		ok = n.Name == sn[i] && n.Machine == sm[i]
	}
	if !ok {
		return fail.Unprocessable("system snapshot %s is of nodes %s; system %s has nodes %s", v.ID, describe(vn, vm), sys.ID, describe(sn, sm))
	}
	return nil
}

func nodeOf(v model.SystemSnapshot, name string) model.SystemSnapshotNode {
	for _, n := range v.Nodes {
		if n.Name == name {
			return n
		}
	}
	return model.SystemSnapshotNode{}
}

// ForkSystem creates a new system from a system snapshot's definition
// (the nodes' boards and programs, the links and their faults) and
// restores it, so it runs on from the saved point beside the original. If
// the restore fails the new system is deleted again.
func (svc *Service) ForkSystem(ctx context.Context, id string, in SystemForkRequest) (model.System, error) {
	v, err := svc.GetSystem(ctx, id)
	if err != nil {
		return model.System{}, err
	}
	spec := v.Spec
	if in.Name != "" {
		spec.Name = in.Name
	}
	sys, err := svc.d.Sessions.CreateSystem(ctx, spec)
	if err != nil {
		return sys, err
	}
	restored, err := svc.RestoreSystem(ctx, sys.ID, RestoreRequest{SnapshotID: id})
	if err != nil {
		if _, derr := svc.d.Sessions.DeleteSystem(context.WithoutCancel(ctx), sys.ID); derr != nil {
			svc.d.Log.Warn("delete a system whose fork failed", "system", sys.ID, "err", derr)
		}
		return model.System{}, err
	}
	svc.publishSystem(events.TypeSystemSnapshotForked, v.ID, v, events.SystemForked{Snapshot: v, System: restored})
	return restored, nil
}

// publishSystem is publish for a system snapshot's events, as the
// snapshot's tenant.
func (svc *Service) publishSystem(typ, subject string, v model.SystemSnapshot, data any) {
	ctx := events.WithTenant(context.Background(), model.TenantOr(v.Tenant))
	if err := svc.d.Publisher.Publish(ctx, typ, subject, data); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}
