package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/jobs/job"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
)

// The job use cases' types, as the handler's callers knew them.
type (
	Deps            = job.Deps
	ProgramResolver = job.ProgramResolver
	StateResolver   = job.StateResolver
	List            = job.List
	Stats           = job.Stats
	RuleRequest     = job.RuleRequest
)

// Handler is the jobs function's REST and CloudEvents adapter over the job
// use cases (job.Service, embedded: its operations are the handler's), and
// runs the workers.
type Handler struct {
	*job.Service
	d      Deps
	source string

	mu      sync.Mutex
	stop    context.CancelFunc
	workers sync.WaitGroup
	running int
}

// New returns the handler; Start runs its workers.
func New(d Deps) *Handler {
	return &Handler{Service: job.New(d), d: d, source: events.Source("jobs")}
}

const maxBody = 64 << 10

// Stats is the job use case's Stats with this process's worker count.
func (h *Handler) Stats(ctx context.Context) (Stats, error) {
	h.mu.Lock()
	n := h.running
	h.mu.Unlock()
	return h.Service.Stats(ctx, n)
}

func (h *Handler) publish(typ string, j model.Job) { h.Publish(j.Tenant, typ, j.ID, j) }

// Routes are the REST API, each with the scope it needs.
func (h *Handler) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/api/v1/jobs", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in model.JobSpec
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			j, err := h.Create(r.Context(), in)
			httpapi.Created(w, r, j.ID, j, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/jobs", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			p, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.List(r.Context(), r.URL.Query().Get("state"), p.Page, p.Size)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/jobs/stats", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			s, err := h.Stats(r.Context())
			httpapi.Reply(w, r, http.StatusOK, s, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/jobs/{id}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			j, err := h.Get(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, j, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/jobs/{id}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			j, err := h.Cancel(r.Context(), r.PathValue("id"))
			status := http.StatusOK
			if j.State == model.JobRunning {
				status = http.StatusAccepted // the worker stops it
			}
			httpapi.Reply(w, r, status, j, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/jobs/{id}/console", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			b, err := h.Console(r.Context(), r.PathValue("id"), r.URL.Query().Get("run"))
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write(b)
		}},
		{Method: http.MethodPost, Pattern: "/api/v1/jobs/rules", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var in RuleRequest
			if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			rule, err := h.CreateRule(r.Context(), in)
			httpapi.Created(w, r, rule.ID, rule, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/jobs/rules", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			rules, err := h.Rules(r.Context())
			httpapi.Reply(w, r, http.StatusOK, map[string]any{"rules": rules}, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/jobs/rules/{id}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			if err := h.DeleteRule(r.Context(), r.PathValue("id")); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
	}
}

// Events returns the CloudEvents receiver: job.create.v1 queues a job whose
// id derives from the event's source and id (so a redelivered event gives
// the same job), program.stored.v1 runs the job rules, and the CDEvents
// testsuiterun.queued and artifact.published do the same for pipelines.
func (h *Handler) Events(ctx context.Context) (http.Handler, error) {
	ops := map[string]cmdevent.Op{
		events.TypeJobCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in model.JobSpec
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			j, err := h.CreateOnce(ctx, in, e.Source(), e.ID())
			return cmdevent.Reply{Type: events.TypeJobQueued, Subject: j.ID, Data: j}, err
		},
		events.TypeProgramStored: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			// Decoded leniently: it is another function's notification,
			// and a field added there must not stop jobs from running.
			var in model.Program
			if err := json.Unmarshal(e.Data(), &in); err != nil {
				return cmdevent.Reply{}, httpapi.BadRequest("program.stored data is not a program: %v", err)
			}
			if !model.ValidID(in.ID) {
				return cmdevent.Reply{}, httpapi.BadRequest("program.stored data has no program id")
			}
			out, err := h.ProgramStored(ctx, in.ID)
			return cmdevent.Reply{Type: events.TypeJobTriggered, Subject: out.ProgramID, Data: out}, err
		},
		events.TypeCDTestSuiteRunQueued: h.cdQueued,
		events.TypeCDArtifactPublished:  h.cdArtifact,
	}
	return cmdevent.Handler(ctx, h.source, ops, h.d.Log)
}

// Health reports what the function is connected to.
func (h *Handler) Health(ctx context.Context) (map[string]any, error) {
	if err := h.d.State.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if err := h.d.Blobs.Ping(ctx); err != nil {
		return nil, fmt.Errorf("blobs: %w", err)
	}
	qs, err := h.d.Queue.Stats(ctx)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return map[string]any{"status": "ok", "redis": h.d.State.Addr(), "blobs": h.d.Blobs.Name(), "workers": h.running, "queue": qs}, nil
}

// QueueConfig is the job queue's configuration, the same for every jobs
// process and the standalone server.
func QueueConfig(lease time.Duration, maxAttempts int) queue.Config {
	return queue.Config{Stream: "ms:jobqueue", Group: "jobs", Lease: lease, MaxAttempts: maxAttempts}
}
