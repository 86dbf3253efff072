package handler

import (
	"context"
	"errors"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// CDEvents in and out (payloads and mapping in events/cdevents.go), so a
// Tekton or Jenkins pipeline that speaks CDEvents starts jobs and reads
// their outcome with no glue.

func (h *Handler) emitStarted(j model.Job) {
	h.emitCD(j.Tenant, events.TypeCDTestSuiteRunStarted, j.ID, events.NewTestSuiteRunStarted(h.source, j))
}

func (h *Handler) emitFinished(j model.Job) {
	h.emitCD(j.Tenant, events.TypeCDTestSuiteRunFinished, j.ID, events.NewTestSuiteRunFinished(h.source, j))
}

func (h *Handler) emitCD(tenant, typ, subject string, data any) {
	if err := h.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(tenant)), typ, subject, data); err != nil {
		h.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

func cdError(err error) error {
	if errors.Is(err, events.ErrInvalidCDEvent) {
		return httpapi.BadRequest("%v", err)
	}
	return err
}

// cdQueued queues the job a testsuiterun.queued CDEvent describes (its
// customData is the job spec); the run's source and subject id make the
// job id with the caller's tenant, so a redelivered event gives the same
// job and another tenant's run of the same name its own.
func (h *Handler) cdQueued(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
	cd, err := events.ParseTestSuiteRunQueued(e.Data())
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	spec, err := events.JobFromTestSuiteRun(cd)
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	j, _, err := h.create(ctx, derivedID(auth.Tenant(ctx), "cdevents", cd.Context.Source, cd.Subject.ID), "", spec)
	return cmdevent.Reply{Type: events.TypeJobQueued, Subject: j.ID, Data: j}, err
}

// cdArtifact runs the job rules for the caller's tenant's program registered
// from the published artifact's bucket key; another tenant's program is
// answered as an unknown key, so neither it nor its jobs are revealed.
func (h *Handler) cdArtifact(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
	cd, err := events.ParseArtifactPublished(e.Data())
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	key, err := events.ArtifactProgramKey(cd)
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	p, err := h.d.Programs.ProgramByKey(ctx, key)
	if auth.Hidden(ctx, p.Tenant, err) {
		return cmdevent.Reply{}, httpapi.Unprocessable("no program was registered from bucket key %q (artifact %s); upload it to the programs bucket first", key, cd.Subject.ID)
	}
	if err != nil {
		return cmdevent.Reply{}, err
	}
	out := events.JobsTriggered{ProgramID: p.ID, SourceKey: key, Jobs: []string{}}
	js, err := h.OnProgramStored(ctx, p, key)
	for _, j := range js {
		out.Jobs = append(out.Jobs, j.ID)
	}
	return cmdevent.Reply{Type: events.TypeJobTriggered, Subject: p.ID, Data: out}, err
}
