package handler

import (
	"context"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/cmdevent"
)

// systemEvents are the system snapshot commands, each the REST call of the
// same name (systemRoutes) answered with the notification it publishes.
func (h *Handler) systemEvents() map[string]cmdevent.Op {
	return map[string]cmdevent.Op{
		events.TypeSystemSnapshotCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.CreateSystemSnapshot
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			v, err := h.CreateSystem(ctx, in.SystemID, CreateRequest{Name: in.Name, Description: in.Description})
			return cmdevent.Reply{Type: events.TypeSystemSnapshotCreated, Subject: v.ID, Data: v}, err
		},
		events.TypeSystemRestore: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.RestoreSystem
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			sys, err := h.RestoreSystem(ctx, in.SystemID, RestoreRequest{SnapshotID: in.SnapshotID})
			if err != nil {
				return cmdevent.Reply{}, err
			}
			v, err := h.GetSystem(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSystemRestored, Subject: sys.ID, Data: events.SystemRestored{Snapshot: v, System: sys}}, err
		},
		events.TypeSystemSnapshotFork: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.ForkSystemSnapshot
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			sys, err := h.ForkSystem(ctx, in.SnapshotID, SystemForkRequest{Name: in.Name})
			if err != nil {
				return cmdevent.Reply{}, err
			}
			v, err := h.GetSystem(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSystemSnapshotForked, Subject: v.ID, Data: events.SystemForked{Snapshot: v, System: sys}}, err
		},
		events.TypeSystemSnapshotDelete: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.SystemSnapshotRef
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			v, err := h.DeleteSystem(ctx, in.SnapshotID)
			return cmdevent.Reply{Type: events.TypeSystemSnapshotDeleted, Subject: v.ID, Data: v}, err
		},
	}
}
