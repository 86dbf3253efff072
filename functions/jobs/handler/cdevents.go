package handler

import (
	"context"
	"errors"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// CDEvents in and out (payloads and mapping in events/cdevents.go), so a
// Tekton or Jenkins pipeline that speaks CDEvents starts jobs and reads
// their outcome with no glue.

func (h *Handler) emitStarted(j model.Job) {
	h.Publish(j.Tenant, events.TypeCDTestSuiteRunStarted, j.ID, events.NewTestSuiteRunStarted(h.source, j))
}

func (h *Handler) emitFinished(j model.Job) {
	h.Publish(j.Tenant, events.TypeCDTestSuiteRunFinished, j.ID, events.NewTestSuiteRunFinished(h.source, j))
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
	j, err := h.CreateOnce(ctx, spec, "cdevents", cd.Context.Source, cd.Subject.ID)
	return cmdevent.Reply{Type: events.TypeJobQueued, Subject: j.ID, Data: j}, err
}

// cdArtifact runs the job rules for the caller's tenant's program registered
// from the published artifact's bucket key.
func (h *Handler) cdArtifact(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
	cd, err := events.ParseArtifactPublished(e.Data())
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	key, err := events.ArtifactProgramKey(cd)
	if err != nil {
		return cmdevent.Reply{}, cdError(err)
	}
	out, err := h.ArtifactPublished(ctx, key, cd.Subject.ID)
	return cmdevent.Reply{Type: events.TypeJobTriggered, Subject: out.ProgramID, Data: out}, err
}
