package handler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

// ProgramResolver finds the caller's tenant's program registered from a
// programs-bucket object key (by the object-upload trigger of the programs
// function); another tenant's program is state.ErrNotFound.
type ProgramResolver interface {
	ProgramByKey(ctx context.Context, key string) (model.Program, error)
}

// Deps are the handler's collaborators. Sessions runs the session use
// cases: a job's session is created, powered and deleted exactly as
// through /api/v1/sessions.
type Deps struct {
	State     *state.Store
	Blobs     blob.Store
	Sessions  *session.Service
	Queue     *queue.Queue
	Publisher events.Publisher
	// Programs resolves program_key; nil means scanning the program index
	// for the key (StateResolver).
	Programs ProgramResolver
	Log      *slog.Logger
	// Quota caps each tenant's running jobs; nil is unlimited.
	Quota *quota.Quota
}

// Handler serves the jobs function and runs its workers.
type Handler struct {
	d      Deps
	source string

	mu      sync.Mutex
	stop    context.CancelFunc
	workers sync.WaitGroup
	running int
}

// New returns the handler; Start runs its workers.
func New(d Deps) *Handler {
	if d.Programs == nil {
		d.Programs = StateResolver{d.State}
	}
	return &Handler{d: d, source: events.Source("jobs")}
}

// StateResolver resolves a program key by the "source_key" the
// object-upload trigger stores in each program it registers, among the
// caller's tenant's stored programs only. (The programs function's key
// index maps a key to the latest program of any tenant, so it cannot answer
// for one tenant when two tenants' buckets hold the same key.)
type StateResolver struct{ State *state.Store }

// ProgramByKey implements ProgramResolver.
func (r StateResolver) ProgramByKey(ctx context.Context, key string) (model.Program, error) {
	return r.State.ProgramBySourceKey(ctx, auth.Tenant(ctx), key)
}

const (
	maxBody = 64 << 10
	// MinTimeout and MaxTimeout bound a job's timeout; DefaultTimeout is
	// used when the request has none.
	MinTimeout     = 100 * time.Millisecond
	MaxTimeout     = 30 * time.Minute
	DefaultTimeout = 30 * time.Second
	maxSteps       = 256
	maxPattern     = 4096
)

// List is GET /api/v1/jobs.
type List struct {
	Jobs     []model.Job `json:"jobs"`
	Total    int         `json:"total"`
	Page     int         `json:"page"`
	PageSize int         `json:"page_size"`
}

// Stats is GET /api/v1/jobs/stats.
type Stats struct {
	// Queue is the whole queue, every tenant's jobs and each worker's
	// claims by name: for admins only.
	Queue *queue.Stats `json:"queue,omitempty"`
	// States counts the caller's tenant's jobs in each state.
	States map[model.JobState]int `json:"states"`
	// Workers is how many workers this jobs process runs.
	Workers int `json:"workers"`
}

// RuleRequest is POST /api/v1/jobs/rules.
type RuleRequest struct {
	Prefix   string        `json:"prefix"`
	Template model.JobSpec `json:"template"`
}

func compile(field, expr string) (*regexp.Regexp, error) {
	if len(expr) > maxPattern {
		return nil, httpapi.BadRequest("%s is limited to %d characters", field, maxPattern)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, httpapi.BadRequest("%s is not a valid regular expression (Go RE2 syntax): %v", field, err)
	}
	return re, nil
}

func parseTimeout(field, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, httpapi.BadRequest("%s must be a duration such as \"20s\" or \"500ms\"; got %q", field, v)
	}
	if d < MinTimeout || d > MaxTimeout {
		return 0, httpapi.BadRequest("%s must be from %v to %v; got %v", field, MinTimeout, MaxTimeout, d)
	}
	return d, nil
}

// validate checks a job spec and fills in defaults; needProgram is false
// for rule templates, whose program comes from the stored object.
func validate(in *model.JobSpec, needProgram bool) error {
	if in.Name != "" && (len(in.Name) > 128 || strings.IndexFunc(in.Name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0) {
		return httpapi.BadRequest("name must be 1 to 128 printable characters")
	}
	if needProgram && in.ProgramID == "" && in.ProgramKey == "" {
		return httpapi.BadRequest("program_id or program_key is required: a stored program's id, or the object key it was uploaded to in the programs bucket")
	}
	if in.ProgramID != "" && in.ProgramKey != "" {
		return httpapi.BadRequest("give program_id or program_key, not both")
	}
	if !needProgram && (in.ProgramID != "" || in.ProgramKey != "") {
		return httpapi.BadRequest("a rule's template takes its program from the stored object; remove program_id and program_key")
	}
	if in.ProgramID != "" && !model.ValidID(in.ProgramID) {
		return httpapi.BadRequest("program_id %q is not a program id (16 hex digits)", in.ProgramID)
	}
	if len(in.ProgramKey) > 1024 {
		return httpapi.BadRequest("program_key is limited to 1024 characters")
	}
	if in.BoardConfig.Board == "" && in.BoardConfig.Processor == nil {
		return httpapi.BadRequest("board_config is required: {\"board\": NAME} or {\"processor\": ..., \"memory\": ...}")
	}
	if in.Timeout == "" {
		in.Timeout = DefaultTimeout.String()
	}
	if _, err := parseTimeout("timeout", in.Timeout); err != nil {
		return err
	}
	for _, f := range []struct{ name, expr string }{{"pass_pattern", in.PassPattern}, {"fail_pattern", in.FailPattern}} {
		if f.expr != "" {
			if _, err := compile(f.name, f.expr); err != nil {
				return err
			}
		}
	}
	if len(in.UARTScript) > maxSteps {
		return httpapi.BadRequest("uart_script is limited to %d steps; got %d", maxSteps, len(in.UARTScript))
	}
	waits := false
	for i, s := range in.UARTScript {
		field := fmt.Sprintf("uart_script[%d]", i)
		switch {
		case s.Send != "" && s.WaitFor != "", s.Send == "" && s.WaitFor == "":
			return httpapi.BadRequest("%s must have exactly one of send (bytes to type) and wait_for (a regular expression)", field)
		case s.Send != "" && s.Timeout != "":
			return httpapi.BadRequest("%s.timeout applies to wait_for steps only", field)
		case s.Send != "" && len(s.Send) > maxBody/4:
			return httpapi.BadRequest("%s.send is limited to %d bytes", field, maxBody/4)
		case s.WaitFor != "":
			waits = true
			if _, err := compile(field+".wait_for", s.WaitFor); err != nil {
				return err
			}
			if s.Timeout != "" {
				if _, err := parseTimeout(field+".timeout", s.Timeout); err != nil {
					return err
				}
			}
		}
	}
	if in.PassPattern == "" && in.ExpectExitCode == nil && !waits {
		return httpapi.BadRequest("a job needs a way to pass: pass_pattern, expect_exit_code, or a uart_script with wait_for steps")
	}
	return nil
}

// derivedID makes a job id from what makes a request unique (the tenant and
// an event's source and id, or a program and a rule), so a duplicate gives
// the same job, and the same event sent by two tenants gives two jobs.
func derivedID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:8])
}

// Create validates a job request and queues it under a new id.
func (h *Handler) Create(ctx context.Context, in model.JobSpec) (model.Job, error) {
	j, _, err := h.create(ctx, model.NewID(), "", in)
	return j, err
}

// create stores and queues a job with the given id; a job that already has
// the id is returned as it is (created false), which makes duplicate
// deliveries of the same request harmless.
func (h *Handler) create(ctx context.Context, id, ruleID string, in model.JobSpec) (model.Job, bool, error) {
	if err := validate(&in, true); err != nil {
		return model.Job{}, false, err
	}
	if old, err := h.d.State.GetJob(ctx, id); err == nil {
		if !auth.Owns(ctx, old.Tenant) {
			// Derived ids include the tenant, so this takes a hash
			// collision; even then the other tenant's job stays unseen.
			return model.Job{}, false, httpapi.NotFound("job %s not found", id)
		}
		return old, false, h.enqueue(ctx, old)
	}
	if in.ProgramKey != "" {
		p, err := h.d.Programs.ProgramByKey(ctx, in.ProgramKey)
		if auth.Hidden(ctx, p.Tenant, err) {
			return model.Job{}, false, httpapi.Unprocessable("no program was registered from program_key %q; upload it to the programs bucket (or use program_id)", in.ProgramKey)
		}
		if err != nil {
			return model.Job{}, false, err
		}
		in.ProgramID = p.ID
	} else if p, err := h.d.State.GetProgram(ctx, in.ProgramID); auth.Hidden(ctx, p.Tenant, err) {
		return model.Job{}, false, httpapi.Unprocessable("program %s does not exist; upload it with POST /api/v1/programs", in.ProgramID)
	} else if err != nil {
		return model.Job{}, false, err
	}
	if err := h.checkBoard(ctx, in.BoardConfig); err != nil {
		return model.Job{}, false, err
	}
	now := time.Now().UTC()
	j := model.Job{ID: id, Tenant: auth.Tenant(ctx), JobSpec: in, RuleID: ruleID, State: model.JobQueued, CreatedAt: now, UpdatedAt: now}
	created, err := h.d.State.CreateJob(ctx, j)
	if err != nil {
		return j, false, err
	}
	if !created {
		old, err := h.d.State.GetJob(ctx, id)
		return old, false, err
	}
	if err := h.enqueue(ctx, j); err != nil {
		// Not queued, so it would stay queued forever: drop it, and a
		// retry of the request (or the event's redelivery) starts afresh.
		h.d.Log.Error("enqueue job", "job", id, "err", err)
		if derr := h.d.State.DeleteJob(context.WithoutCancel(ctx), id); derr != nil {
			h.d.Log.Error("drop job that could not be queued", "job", id, "err", derr)
		}
		return model.Job{}, false, httpapi.Unavailable("job could not be queued; retry: %v", err)
	}
	h.publish(events.TypeJobQueued, j)
	return j, true, nil
}

// enqueue (re)queues a queued job: the queue drops a duplicate, and a job
// whose first enqueue was lost to a crash is queued now.
func (h *Handler) enqueue(ctx context.Context, j model.Job) error {
	if j.State != model.JobQueued {
		return nil
	}
	_, err := h.d.Queue.Enqueue(ctx, j.ID)
	return err
}

// checkBoard refuses a board config no runner can run, when runners are
// there to ask; without any, the job waits in the queue for one.
func (h *Handler) checkBoard(ctx context.Context, bc model.BoardConfig) error {
	caps, err := h.d.Sessions.Capabilities(ctx)
	if err != nil {
		return nil
	}
	if _, _, err := session.Resolve(caps, "", bc); err != nil {
		return httpapi.Unprocessable("board_config: %v", err)
	}
	return nil
}

// Get returns a job or a 404.
func (h *Handler) Get(ctx context.Context, id string) (model.Job, error) {
	if !model.ValidID(id) {
		return model.Job{}, httpapi.NotFound("job %q not found (ids are 16 hex digits)", id)
	}
	j, err := h.d.State.GetJob(ctx, id)
	if auth.Hidden(ctx, j.Tenant, err) {
		return model.Job{}, httpapi.NotFound("job %s not found", id)
	}
	return j, err
}

// List returns one page of the jobs in a state ("" for all).
func (h *Handler) List(ctx context.Context, st string, p httpapi.Page) (List, error) {
	if st != "" {
		ok := false
		names := make([]string, len(model.JobStates))
		for i, s := range model.JobStates {
			names[i] = string(s)
			ok = ok || string(s) == st
		}
		if !ok {
			return List{}, httpapi.BadRequest("state must be one of %s; got %q", strings.Join(names, ", "), st)
		}
	}
	js, total, err := h.d.State.ListJobs(ctx, func(j model.Job) bool {
		return auth.Owns(ctx, j.Tenant) && (st == "" || string(j.State) == st)
	}, p.Offset(), p.Size)
	return List{Jobs: js, Total: total, Page: p.Page, PageSize: p.Size}, err
}

var errFinal = errors.New("job is final")

// Cancel cancels a job: a queued one at once, a running one as soon as its
// worker notices (it stops the session and records cancelled).
func (h *Handler) Cancel(ctx context.Context, id string) (model.Job, error) {
	if _, err := h.Get(ctx, id); err != nil {
		return model.Job{}, err
	}
	var was model.JobState
	j, err := h.d.State.UpdateJob(ctx, id, func(j *model.Job) error {
		was = j.State
		switch j.State {
		case model.JobQueued:
			now := time.Now().UTC()
			j.State, j.Reason, j.FinishedAt = model.JobCancelled, "cancelled while queued", &now
		case model.JobRunning:
			j.CancelRequested = true
		default:
			return errFinal
		}
		return nil
	})
	if errors.Is(err, errFinal) {
		return j, httpapi.Conflict("job %s already ended (state %s)", id, was)
	}
	if err == nil && j.State == model.JobCancelled {
		h.publish(events.TypeJobCancelled, j)
	}
	return j, err
}

// Stats reports how many of the caller's tenant's jobs are in each state,
// and to admins the queue: its depth, age and workers are everyone's.
func (h *Handler) Stats(ctx context.Context) (Stats, error) {
	st := Stats{States: map[model.JobState]int{}}
	if p, ok := auth.FromContext(ctx); ok && p.Has(auth.ScopeAdmin) {
		qs, err := h.d.Queue.Stats(ctx)
		if err != nil {
			return Stats{}, err
		}
		st.Queue = &qs
	}
	all, _, err := h.d.State.ListJobs(ctx, func(j model.Job) bool { return auth.Owns(ctx, j.Tenant) }, 0, 1<<30)
	if err != nil {
		return Stats{}, err
	}
	for _, j := range all {
		st.States[j.State]++
	}
	h.mu.Lock()
	st.Workers = h.running
	h.mu.Unlock()
	return st, nil
}

// Console returns the job's stored console log.
func (h *Handler) Console(ctx context.Context, id string) ([]byte, error) {
	j, err := h.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.ConsoleKey == "" && j.State.Final() {
		return nil, httpapi.Conflict("job %s ended (%s) before its firmware ran, so it has no console log: %s", id, j.State, j.Reason)
	}
	if j.ConsoleKey == "" {
		msg := fmt.Sprintf("job %s is %s; its console log is stored when it ends", id, j.State)
		if j.State == model.JobRunning && j.SessionID != "" {
			msg += "; follow it live at /api/v1/sessions/" + j.SessionID + "/console"
		}
		return nil, httpapi.Conflict("%s", msg)
	}
	return blob.GetBytes(ctx, h.d.Blobs, j.ConsoleKey)
}

// CreateRule stores a job rule for a bucket key prefix.
func (h *Handler) CreateRule(ctx context.Context, in RuleRequest) (model.JobRule, error) {
	if in.Prefix == "" || len(in.Prefix) > 1024 {
		return model.JobRule{}, httpapi.BadRequest("prefix is required: the start of the bucket keys (1 to 1024 characters) whose programs run this job")
	}
	if err := validate(&in.Template, false); err != nil {
		var he *httpapi.Error
		if errors.As(err, &he) {
			he.Message = "template: " + he.Message
		}
		return model.JobRule{}, err
	}
	r := model.JobRule{ID: model.NewID(), Tenant: auth.Tenant(ctx), Prefix: in.Prefix, Template: in.Template, CreatedAt: time.Now().UTC()}
	return r, h.d.State.PutJobRule(ctx, r)
}

// Rules lists the caller's job rules.
func (h *Handler) Rules(ctx context.Context) ([]model.JobRule, error) {
	all, err := h.d.State.JobRules(ctx)
	out := []model.JobRule{}
	for _, r := range all {
		if auth.Owns(ctx, r.Tenant) {
			out = append(out, r)
		}
	}
	return out, err
}

// DeleteRule removes one of the caller's job rules.
func (h *Handler) DeleteRule(ctx context.Context, id string) error {
	rules, err := h.Rules(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(rules, func(r model.JobRule) bool { return r.ID == id }) {
		return httpapi.NotFound("job rule %s not found", id)
	}
	err = h.d.State.DeleteJobRule(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return httpapi.NotFound("job rule %s not found", id)
	}
	return err
}

// OnProgramStored queues one job per rule whose prefix matches the bucket
// key the program was stored from. Job ids derive from the program and the
// rule, so a duplicate notification queues nothing new.
func (h *Handler) OnProgramStored(ctx context.Context, p model.Program, sourceKey string) ([]model.Job, error) {
	if sourceKey == "" {
		return nil, nil
	}
	rules, err := h.d.State.JobRules(ctx)
	if err != nil {
		return nil, err
	}
	// The jobs are the program's tenant's, whoever delivered the event.
	ctx = tenantContext(ctx, p.Tenant, "rules")
	var out []model.Job
	for _, r := range rules {
		if !strings.HasPrefix(sourceKey, r.Prefix) || !auth.Owns(ctx, r.Tenant) {
			continue
		}
		spec := r.Template
		spec.ProgramID = p.ID
		if spec.Name == "" {
			spec.Name = sourceKey
		}
		j, _, err := h.create(ctx, derivedID(p.ID, r.ID), r.ID, spec)
		if err != nil {
			return out, fmt.Errorf("rule %s: %w", r.ID, err)
		}
		out = append(out, j)
	}
	return out, nil
}

// publish carries the job's tenant as the event's tenant attribute.
func (h *Handler) publish(typ string, j model.Job) {
	if err := h.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(j.Tenant)), typ, j.ID, j); err != nil {
		h.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

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
			l, err := h.List(r.Context(), r.URL.Query().Get("state"), p)
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
			b, err := h.Console(r.Context(), r.PathValue("id"))
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
			j, _, err := h.create(ctx, derivedID(auth.Tenant(ctx), e.Source(), e.ID()), "", in)
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
			// Only the id is taken from the event: the stored program
			// says whose it is and which key it came from, and only its
			// tenant may run rules for it.
			p, err := h.d.State.GetProgram(ctx, in.ID)
			if auth.Hidden(ctx, p.Tenant, err) {
				return cmdevent.Reply{}, httpapi.Unprocessable("program %s does not exist", in.ID)
			}
			if err != nil {
				return cmdevent.Reply{}, err
			}
			out := events.JobsTriggered{ProgramID: p.ID, SourceKey: p.SourceKey, Jobs: []string{}}
			if p.State == model.ProgramRejected {
				return cmdevent.Reply{Type: events.TypeJobTriggered, Subject: p.ID, Data: out}, nil
			}
			js, err := h.OnProgramStored(ctx, p, p.SourceKey)
			for _, j := range js {
				out.Jobs = append(out.Jobs, j.ID)
			}
			return cmdevent.Reply{Type: events.TypeJobTriggered, Subject: p.ID, Data: out}, err
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

// tenantContext acts for tenant (the default one for ""), as the workers and
// the job rules do: they work for a job's owner, not for a request.
func tenantContext(ctx context.Context, tenant, actor string) context.Context {
	return auth.WithPrincipal(ctx, auth.Principal{Actor: "jobs:" + actor, Tenant: model.TenantOr(tenant), Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite, auth.ScopeDebug}})
}
