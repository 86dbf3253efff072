package job

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
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

// Deps are the use cases' (and the workers') collaborators. Sessions runs
// the session use cases: a job's session is created, powered and deleted
// exactly as through /api/v1/sessions.
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

// Service runs the job use cases, for the jobs function's REST and
// CloudEvents adapters and its workers.
type Service struct {
	d Deps
}

// New returns the service.
func New(d Deps) *Service {
	if d.Programs == nil {
		d.Programs = StateResolver{d.State}
	}
	return &Service{d: d}
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
	// maxSend bounds one uart_script send step (a quarter of the largest
	// request body the REST API takes).
	maxSend = 16 << 10
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
	// Workers is how many workers this jobs process runs (the caller's
	// count: the workers are not the service's).
	Workers int `json:"workers"`
}

// RuleRequest is POST /api/v1/jobs/rules.
type RuleRequest struct {
	Prefix   string        `json:"prefix"`
	Template model.JobSpec `json:"template"`
}

func compile(field, expr string) (*regexp.Regexp, error) {
	if len(expr) > maxPattern {
		return nil, fail.Invalid("%s is limited to %d characters", field, maxPattern)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fail.Invalid("%s is not a valid regular expression (Go RE2 syntax): %v", field, err)
	}
	return re, nil
}

func parseTimeout(field, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fail.Invalid("%s must be a duration such as \"20s\" or \"500ms\"; got %q", field, v)
	}
	if d < MinTimeout || d > MaxTimeout {
		return 0, fail.Invalid("%s must be from %v to %v; got %v", field, MinTimeout, MaxTimeout, d)
	}
	return d, nil
}

// validate checks a job spec and fills in defaults; needProgram is false
// for rule templates, whose program comes from the stored object.
func validate(in *model.JobSpec, needProgram bool) error {
	if in.Name != "" && (len(in.Name) > 128 || strings.IndexFunc(in.Name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0) {
		return fail.Invalid("name must be 1 to 128 printable characters")
	}
	if needProgram && in.ProgramID == "" && in.ProgramKey == "" {
		return fail.Invalid("program_id or program_key is required: a stored program's id, or the object key it was uploaded to in the programs bucket")
	}
	if in.ProgramID != "" && in.ProgramKey != "" {
		return fail.Invalid("give program_id or program_key, not both")
	}
	if !needProgram && (in.ProgramID != "" || in.ProgramKey != "") {
		return fail.Invalid("a rule's template takes its program from the stored object; remove program_id and program_key")
	}
	if in.ProgramID != "" && !model.ValidID(in.ProgramID) {
		return fail.Invalid("program_id %q is not a program id (16 hex digits)", in.ProgramID)
	}
	if len(in.ProgramKey) > 1024 {
		return fail.Invalid("program_key is limited to 1024 characters")
	}
	if in.BoardConfig.Board == "" && in.BoardConfig.Processor == nil {
		return fail.Invalid("board_config is required: {\"board\": NAME} or {\"processor\": ..., \"memory\": ...}")
	}
	if in.Repeat != nil && (*in.Repeat < 1 || *in.Repeat > MaxRepeat) {
		return fail.Invalid("repeat must be from 1 to %d (how many times the job runs, each in a fresh session, to see whether the runs agree); got %d", MaxRepeat, *in.Repeat)
	}
	switch {
	case in.Deterministic && in.Record:
		return fail.Invalid(model.DeterministicRecordConflict)
	case in.KeepRecording != "" && !in.Record:
		return fail.Invalid("keep_recording applies to recorded jobs only; add \"record\": true or remove it")
	case in.KeepRecording == "" && in.Record:
		in.KeepRecording = model.KeepFailed
	case in.KeepRecording != "" && in.KeepRecording != model.KeepFailed && in.KeepRecording != model.KeepAlways:
		return fail.Invalid("keep_recording must be %q (keep the recording of a job that did not pass, the default) or %q; got %q", model.KeepFailed, model.KeepAlways, in.KeepRecording)
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
		return fail.Invalid("uart_script is limited to %d steps; got %d", maxSteps, len(in.UARTScript))
	}
	waits := false
	for i, s := range in.UARTScript {
		field := fmt.Sprintf("uart_script[%d]", i)
		switch {
		case s.Send != "" && s.WaitFor != "", s.Send == "" && s.WaitFor == "":
			return fail.Invalid("%s must have exactly one of send (bytes to type) and wait_for (a regular expression)", field)
		case s.Send != "" && s.Timeout != "":
			return fail.Invalid("%s.timeout applies to wait_for steps only", field)
		case s.Send != "" && len(s.Send) > maxSend:
			return fail.Invalid("%s.send is limited to %d bytes", field, maxSend)
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
		return fail.Invalid("a job needs a way to pass: pass_pattern, expect_exit_code, or a uart_script with wait_for steps")
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
func (svc *Service) Create(ctx context.Context, in model.JobSpec) (model.Job, error) {
	j, _, err := svc.create(ctx, model.NewID(), "", in)
	return j, err
}

// CreateOnce is Create for a request that may be delivered twice (an
// event): the job id derives from the caller's tenant and key (e.g. the
// event's source and id), so a redelivery gives the same job.
func (svc *Service) CreateOnce(ctx context.Context, in model.JobSpec, key ...string) (model.Job, error) {
	j, _, err := svc.create(ctx, derivedID(append([]string{auth.Tenant(ctx)}, key...)...), "", in)
	return j, err
}

// create stores and queues a job with the given id; a job that already has
// the id is returned as it is (created false), which makes duplicate
// deliveries of the same request harmless.
func (svc *Service) create(ctx context.Context, id, ruleID string, in model.JobSpec) (model.Job, bool, error) {
	if err := validate(&in, true); err != nil {
		return model.Job{}, false, err
	}
	if old, err := svc.d.State.GetJob(ctx, id); err == nil {
		if !auth.Owns(ctx, old.Tenant) {
			// Derived ids include the tenant, so this takes a hash
			// collision; even then the other tenant's job stays unseen.
			return model.Job{}, false, fail.NotFound("job %s not found", id)
		}
		return old, false, svc.enqueue(ctx, old)
	}
	if in.ProgramKey != "" {
		p, err := svc.d.Programs.ProgramByKey(ctx, in.ProgramKey)
		if auth.Hidden(ctx, p.Tenant, err) {
			return model.Job{}, false, fail.Unprocessable("no program was registered from program_key %q; upload it to the programs bucket (or use program_id)", in.ProgramKey)
		}
		if err != nil {
			return model.Job{}, false, err
		}
		in.ProgramID = p.ID
	} else if p, err := svc.d.State.GetProgram(ctx, in.ProgramID); auth.Hidden(ctx, p.Tenant, err) {
		return model.Job{}, false, fail.Unprocessable("program %s does not exist; upload it with POST /api/v1/programs", in.ProgramID)
	} else if err != nil {
		return model.Job{}, false, err
	}
	if err := svc.checkBoard(ctx, in); err != nil {
		return model.Job{}, false, err
	}
	now := time.Now().UTC()
	j := model.Job{ID: id, Tenant: auth.Tenant(ctx), JobSpec: in, RuleID: ruleID, State: model.JobQueued, CreatedAt: now, UpdatedAt: now}
	created, err := svc.d.State.CreateJob(ctx, j)
	if err != nil {
		return j, false, err
	}
	if !created {
		old, err := svc.d.State.GetJob(ctx, id)
		return old, false, err
	}
	if err := svc.enqueue(ctx, j); err != nil {
		// Not queued, so it would stay queued forever: drop it, and a
		// retry of the request (or the event's redelivery) starts afresh.
		svc.d.Log.Error("enqueue job", "job", id, "err", err)
		if derr := svc.d.State.DeleteJob(context.WithoutCancel(ctx), id); derr != nil {
			svc.d.Log.Error("drop job that could not be queued", "job", id, "err", derr)
		}
		return model.Job{}, false, fail.Unavailable("job could not be queued; retry: %v", err)
	}
	svc.publish(events.TypeJobQueued, j)
	return j, true, nil
}

// enqueue (re)queues a queued job: the queue drops a duplicate, and a job
// whose first enqueue was lost to a crash is queued now.
func (svc *Service) enqueue(ctx context.Context, j model.Job) error {
	if j.State != model.JobQueued {
		return nil
	}
	_, err := svc.d.Queue.Enqueue(ctx, j.ID)
	return err
}

// checkBoard refuses a board config no runner can run (or not
// deterministically, when asked), when runners are there to ask; without
// any, the job waits in the queue for one.
func (svc *Service) checkBoard(ctx context.Context, in model.JobSpec) error {
	caps, err := svc.d.Sessions.Capabilities(ctx)
	if err != nil {
		return nil
	}
	_, b, err := session.Resolve(caps, "", in.BoardConfig)
	if err != nil {
		return fail.Unprocessable("board_config: %v", err)
	}
	if err := b.Require(board.FeatureDeterministic); in.Deterministic && err != nil {
		return fail.Unprocessable("deterministic: %v", err)
	}
	if err := b.Require(board.FeatureRecord); in.Record && err != nil {
		return fail.Unprocessable("record: %v", err)
	}
	return nil
}

// Get returns one of the caller's jobs; another tenant's is not found.
func (svc *Service) Get(ctx context.Context, id string) (model.Job, error) {
	return auth.Lookup(ctx, "job", id, svc.d.State.GetJob, func(j model.Job) string { return j.Tenant })
}

// List returns one page of the jobs in a state ("" for all).
func (svc *Service) List(ctx context.Context, st string, page, size int) (List, error) {
	if st != "" {
		ok := false
		names := make([]string, len(model.JobStates))
		for i, s := range model.JobStates {
			names[i] = string(s)
			ok = ok || string(s) == st
		}
		if !ok {
			return List{}, fail.Invalid("state must be one of %s; got %q", strings.Join(names, ", "), st)
		}
	}
	js, total, err := svc.d.State.ListJobs(ctx, func(j model.Job) bool {
		return auth.Owns(ctx, j.Tenant) && (st == "" || string(j.State) == st)
	}, (page-1)*size, size)
	return List{Jobs: js, Total: total, Page: page, PageSize: size}, err
}

// ErrFinal stops an update of a job that already ended (cancel, and a
// worker's start or deferral of a job cancelled meanwhile).
var ErrFinal = errors.New("job is final")

// Cancel cancels a job: a queued one at once, a running one as soon as its
// worker notices (it stops the session and records cancelled).
func (svc *Service) Cancel(ctx context.Context, id string) (model.Job, error) {
	if _, err := svc.Get(ctx, id); err != nil {
		return model.Job{}, err
	}
	var was model.JobState
	j, err := svc.d.State.UpdateJob(ctx, id, func(j *model.Job) error {
		was = j.State
		switch j.State {
		case model.JobQueued:
			now := time.Now().UTC()
			j.State, j.Reason, j.FinishedAt = model.JobCancelled, "cancelled while queued", &now
		case model.JobRunning:
			j.CancelRequested = true
		default:
			return ErrFinal
		}
		return nil
	})
	if errors.Is(err, ErrFinal) {
		return j, fail.Conflict("job %s already ended (state %s)", id, was)
	}
	if err == nil && j.State == model.JobCancelled {
		svc.publish(events.TypeJobCancelled, j)
	}
	return j, err
}

// Stats reports how many of the caller's tenant's jobs are in each state,
// and to admins the queue: its depth, age and workers are everyone's.
// workers is how many workers the calling process runs.
func (svc *Service) Stats(ctx context.Context, workers int) (Stats, error) {
	st := Stats{States: map[model.JobState]int{}, Workers: workers}
	if p, ok := auth.FromContext(ctx); ok && p.Has(auth.ScopeAdmin) {
		qs, err := svc.d.Queue.Stats(ctx)
		if err != nil {
			return Stats{}, err
		}
		st.Queue = &qs
	}
	all, _, err := svc.d.State.ListJobs(ctx, func(j model.Job) bool { return auth.Owns(ctx, j.Tenant) }, 0, 1<<30)
	if err != nil {
		return Stats{}, err
	}
	for _, j := range all {
		st.States[j.State]++
	}
	return st, nil
}

// Console returns the job's stored console log, or with run ("2" to
// the job's repeat) that of one of a repeated job's runs.
func (svc *Service) Console(ctx context.Context, id, run string) ([]byte, error) {
	j, err := svc.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if run != "" && run != "1" {
		n, err := strconv.Atoi(run)
		if err != nil || n < 1 || n > MaxRepeat {
			return nil, fail.Invalid("run must be a run's number, from 1 to the job's repeat (at most %d); got %q", MaxRepeat, run)
		}
		if n > len(j.Runs) || j.Runs[n-1].ConsoleKey == "" {
			return nil, fail.NotFound("job %s has no console log of run %d (%d runs recorded)", id, n, len(j.Runs))
		}
		return blob.GetBytes(ctx, svc.d.Blobs, j.Runs[n-1].ConsoleKey)
	}
	if j.ConsoleKey == "" && j.State.Final() {
		return nil, fail.Conflict("job %s ended (%s) before its firmware ran, so it has no console log: %s", id, j.State, j.Reason)
	}
	if j.ConsoleKey == "" {
		msg := fmt.Sprintf("job %s is %s; its console log is stored when it ends", id, j.State)
		if j.State == model.JobRunning && j.SessionID != "" {
			msg += "; follow it live at /api/v1/sessions/" + j.SessionID + "/console"
		}
		return nil, fail.Conflict("%s", msg)
	}
	return blob.GetBytes(ctx, svc.d.Blobs, j.ConsoleKey)
}

// CreateRule stores a job rule for a bucket key prefix.
func (svc *Service) CreateRule(ctx context.Context, in RuleRequest) (model.JobRule, error) {
	if in.Prefix == "" || len(in.Prefix) > 1024 {
		return model.JobRule{}, fail.Invalid("prefix is required: the start of the bucket keys (1 to 1024 characters) whose programs run this job")
	}
	if err := validate(&in.Template, false); err != nil {
		var fe *fail.Error
		if errors.As(err, &fe) {
			fe.Message = "template: " + fe.Message
		}
		return model.JobRule{}, err
	}
	r := model.JobRule{ID: model.NewID(), Tenant: auth.Tenant(ctx), Prefix: in.Prefix, Template: in.Template, CreatedAt: time.Now().UTC()}
	return r, svc.d.State.PutJobRule(ctx, r)
}

// Rules lists the caller's job rules.
func (svc *Service) Rules(ctx context.Context) ([]model.JobRule, error) {
	all, err := svc.d.State.JobRules(ctx)
	out := []model.JobRule{}
	for _, r := range all {
		if auth.Owns(ctx, r.Tenant) {
			out = append(out, r)
		}
	}
	return out, err
}

// DeleteRule removes one of the caller's job rules.
func (svc *Service) DeleteRule(ctx context.Context, id string) error {
	rules, err := svc.Rules(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(rules, func(r model.JobRule) bool { return r.ID == id }) {
		return fail.NotFound("job rule %s not found", id)
	}
	err = svc.d.State.DeleteJobRule(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return fail.NotFound("job rule %s not found", id)
	}
	return err
}

// OnProgramStored queues one job per rule whose prefix matches the bucket
// key the program was stored from. Job ids derive from the program and the
// rule, so a duplicate notification queues nothing new.
func (svc *Service) OnProgramStored(ctx context.Context, p model.Program, sourceKey string) ([]model.Job, error) {
	if sourceKey == "" {
		return nil, nil
	}
	rules, err := svc.d.State.JobRules(ctx)
	if err != nil {
		return nil, err
	}
	// The jobs are the program's tenant's, whoever delivered the event.
	ctx = TenantContext(ctx, p.Tenant, "rules")
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
		j, _, err := svc.create(ctx, derivedID(p.ID, r.ID), r.ID, spec)
		if err != nil {
			return out, fmt.Errorf("rule %s: %w", r.ID, err)
		}
		out = append(out, j)
	}
	return out, nil
}

// ProgramStored runs the job rules for a stored program, named by id
// only: the stored program says whose it is and which key it came from,
// and only its tenant may run rules for it. A rejected program runs none.
func (svc *Service) ProgramStored(ctx context.Context, id string) (events.JobsTriggered, error) {
	p, err := svc.d.State.GetProgram(ctx, id)
	if auth.Hidden(ctx, p.Tenant, err) {
		return events.JobsTriggered{}, fail.Unprocessable("program %s does not exist", id)
	}
	if err != nil {
		return events.JobsTriggered{}, err
	}
	if p.State == model.ProgramRejected {
		return events.JobsTriggered{ProgramID: p.ID, SourceKey: p.SourceKey, Jobs: []string{}}, nil
	}
	return svc.trigger(ctx, p, p.SourceKey)
}

// ArtifactPublished runs the job rules for the caller's tenant's program
// registered from a published artifact's bucket key; another tenant's
// program is answered as an unknown key, so neither it nor its jobs are
// revealed.
func (svc *Service) ArtifactPublished(ctx context.Context, key, artifact string) (events.JobsTriggered, error) {
	p, err := svc.d.Programs.ProgramByKey(ctx, key)
	if auth.Hidden(ctx, p.Tenant, err) {
		return events.JobsTriggered{}, fail.Unprocessable("no program was registered from bucket key %q (artifact %s); upload it to the programs bucket first", key, artifact)
	}
	if err != nil {
		return events.JobsTriggered{}, err
	}
	return svc.trigger(ctx, p, key)
}

func (svc *Service) trigger(ctx context.Context, p model.Program, key string) (events.JobsTriggered, error) {
	out := events.JobsTriggered{ProgramID: p.ID, SourceKey: key, Jobs: []string{}}
	js, err := svc.OnProgramStored(ctx, p, key)
	for _, j := range js {
		out.Jobs = append(out.Jobs, j.ID)
	}
	return out, err
}

func (svc *Service) publish(typ string, j model.Job) { svc.Publish(j.Tenant, typ, j.ID, j) }

// Publish sends a job event (the workers' too) with the job's tenant as
// the event's tenant attribute; a failure is logged, not returned, since
// the job's record is the truth.
func (svc *Service) Publish(tenant, typ, subject string, data any) {
	if err := svc.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(tenant)), typ, subject, data); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// TenantContext acts for tenant (the default one for ""), as the workers and
// the job rules do: they work for a job's owner, not for a request.
func TenantContext(ctx context.Context, tenant, actor string) context.Context {
	return auth.WithPrincipal(ctx, auth.Principal{Actor: "jobs:" + actor, Tenant: model.TenantOr(tenant), Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite, auth.ScopeDebug}})
}
