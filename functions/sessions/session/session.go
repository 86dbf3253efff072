package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Deps are the use cases' collaborators.
type Deps struct {
	State *state.Store
	// Blobs holds programs (read for coverage reports) and coverage reports.
	Blobs       blob.Store
	Publisher   events.Publisher
	RunnerToken string
	Log         *slog.Logger
	// Quota limits each tenant's concurrent sessions; nil is unlimited.
	Quota *quota.Quota
}

// Service runs the session use cases, for the sessions function's REST
// and CloudEvents adapters and for the functions that drive sessions
// (jobs, snapshots).
type Service struct {
	d Deps
}

// New returns the service.
func New(d Deps) *Service { return &Service{d: d} }

// CreateRequest is POST /api/v1/sessions.
type CreateRequest struct {
	Name        string            `json:"name"`
	Backend     string            `json:"backend"`
	BoardConfig model.BoardConfig `json:"board_config"`
	// Coverage collects coverage from the first power on.
	Coverage bool `json:"coverage,omitempty"`
	// Deterministic runs the emulator on its instruction counter, where
	// the board supports it (capabilities: "deterministic").
	Deterministic bool `json:"deterministic,omitempty"`
	// Limits cap the emulator's CPU (percent of one core, 1-100) and memory
	// (16-4096 MB); omitted fields take the runner's defaults.
	Limits *model.Limits `json:"limits,omitempty"`
	// Record records every power on's execution, for replay.
	Record bool `json:"record,omitempty"`
}

// LoadRequest is POST /api/v1/sessions/{id}/program.
type LoadRequest struct {
	ProgramID string `json:"program_id"`
}

// List is GET /api/v1/sessions.
type List struct {
	Sessions []model.Session `json:"sessions"`
	Total    int             `json:"total"`
	Page     int             `json:"page"`
	PageSize int             `json:"page_size"`
}

// Capabilities merges what the live runners offer. Runners run the same
// image, so the first one speaks for all.
func (svc *Service) Capabilities(ctx context.Context) (board.Capabilities, error) {
	rs, err := svc.d.State.Runners(ctx)
	if err != nil {
		return board.Capabilities{}, err
	}
	if len(rs) == 0 {
		return board.Capabilities{}, fail.Unavailable("no runner is registered; capabilities come from the runners' emulators")
	}
	docs := make([]board.Capabilities, len(rs))
	for i, r := range rs {
		docs[i] = r.Capabilities
	}
	// Runners may offer different boards (other emulator binaries): the
	// platform offers them all, and placement finds a runner for each.
	return board.Merge(docs...), nil
}

func validName(n string) error {
	if n == "" || len(n) > 128 {
		return fail.Invalid("name is required and must be 1 to 128 characters")
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return fail.Invalid("name must contain printable characters only")
		}
	}
	return nil
}

// Create validates the request, resolves the board, picks a runner and stores
// the session in state created.
func (svc *Service) Create(ctx context.Context, in CreateRequest) (model.Session, error) {
	if err := validName(in.Name); err != nil {
		return model.Session{}, err
	}
	if err := runnerapi.CheckLimits(in.Limits); err != nil {
		return model.Session{}, err
	}
	caps, err := svc.Capabilities(ctx)
	if err != nil {
		return model.Session{}, err
	}
	if err := checkLimits(in.Limits, caps); err != nil {
		return model.Session{}, err
	}
	if in.Deterministic && in.Record {
		return model.Session{}, fail.Invalid(model.DeterministicRecordConflict)
	}
	be, b, err := Resolve(caps, in.Backend, in.BoardConfig)
	if err != nil {
		return model.Session{}, err
	}
	in.Backend = be.Name
	if err := b.Require(board.FeatureDeterministic); in.Deterministic && err != nil {
		return model.Session{}, fail.Unprocessable("deterministic: %v", err)
	}
	if in.Record && !b.Has(board.FeatureRecord) {
		return model.Session{}, fail.Unprocessable("board %s cannot be recorded with this emulator (its capabilities lack %q)", b.Name, board.FeatureRecord)
	}
	r, err := svc.pickRunner(ctx, be.Name, b.Name)
	if err != nil {
		return model.Session{}, err
	}
	now := time.Now().UTC()
	s := model.Session{
		ID: model.NewID(), Tenant: auth.Tenant(ctx), Name: in.Name, Backend: in.Backend, BoardConfig: in.BoardConfig,
		Machine: b.Name, State: model.StateCreated, RunnerID: r.ID, CreatedAt: now, UpdatedAt: now,
		Coverage: in.Coverage, Limits: in.Limits, Record: in.Record, Deterministic: in.Deterministic,
	}
	if err := svc.store(ctx, s); err != nil {
		return model.Session{}, err
	}
	return s, nil
}

// store takes the new session's quota slot and stores it.
func (svc *Service) store(ctx context.Context, s model.Session) error {
	if err := svc.d.Quota.Acquire(ctx, s.Tenant, quota.Sessions, s.ID, 1); err != nil {
		return err
	}
	if err := svc.d.State.CreateSession(ctx, s); err != nil {
		svc.release(ctx, s)
		return err
	}
	svc.publish(events.TypeSessionCreated, s)
	return nil
}

func (svc *Service) pickRunner(ctx context.Context, backend, machine string) (state.Runner, error) {
	rs, err := svc.d.State.Runners(ctx)
	if err != nil {
		return state.Runner{}, err
	}
	offered := false
	for _, r := range rs {
		// A session stored before sessions named their backend has none:
		// any backend with the board will do.
		if !slices.ContainsFunc(r.Capabilities.Backends, func(be board.Backend) bool {
			_, has := be.Board(machine)
			return has && (backend == "" || be.Name == backend)
		}) {
			continue
		}
		offered = true
		if r.Free() > 0 {
			return r, nil
		}
	}
	if !offered && len(rs) > 0 {
		return state.Runner{}, fail.Unprocessable("no runner offers board %s of backend %s", machine, backend)
	}
	return state.Runner{}, fail.Unavailable("no runner that offers board %s has free capacity; try again later", machine)
}

// Resolve picks the backend and board for a board config: the named
// backend, or else the first whose catalog resolves it (a board name, or a
// processor and memory map). With no backend named and none resolving it,
// the error is the first backend's.
func Resolve(caps board.Capabilities, backend string, bc model.BoardConfig) (board.Backend, board.Board, error) {
	var names []string
	for _, be := range caps.Backends {
		names = append(names, be.Name)
	}
	if backend != "" {
		be, ok := caps.Backend(backend)
		if !ok {
			return board.Backend{}, board.Board{}, fail.Unprocessable("backend %q is not available; available backends: %s", backend, strings.Join(names, ", "))
		}
		b, err := be.Resolve(bc)
		return be, b, resolveError(err)
	}
	var first error
	for _, be := range caps.Backends {
		b, err := be.Resolve(bc)
		if err == nil {
			return be, b, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return board.Backend{}, board.Board{}, fail.Unavailable("no emulator backend is offered by any runner")
	}
	return board.Backend{}, board.Board{}, resolveError(first)
}

func resolveError(err error) error {
	var nf *board.NoFitError
	if errors.As(err, &nf) {
		e := fail.Unprocessable("%s", err.Error())
		e.Code, e.Details = "no_matching_board", map[string]any{"candidates": nf.Candidates}
		return e
	}
	if err != nil {
		return fail.Unprocessable("%s", err.Error())
	}
	return nil
}

// release gives a session's quota slot back. The session is already gone,
// so a failure is only logged: Reconcile repairs the count.
func (svc *Service) release(ctx context.Context, s model.Session) {
	if err := svc.d.Quota.Release(context.WithoutCancel(ctx), model.TenantOr(s.Tenant), quota.Sessions, s.ID); err != nil {
		svc.d.Log.Warn("quota release", "session", s.ID, "err", err)
	}
}

// Get returns a session of the caller's tenant (from ctx) or not found. It is
// the one place every session operation, stream and coverage call goes
// through, so a session of another tenant is answered exactly like an
// unknown id and ids do not leak.
func (svc *Service) Get(ctx context.Context, id string) (model.Session, error) {
	s, err := svc.Owned(ctx, id)
	if err == nil && s.State == model.StateRunning {
		s, err = svc.checkRunner(ctx, s)
	}
	return s, err
}

// Owned is the caller's session as stored, or not found, without Get's check
// that a running session's runner lives: for callers that read the runner
// record anyway (and call Get when it is gone).
func (svc *Service) Owned(ctx context.Context, id string) (model.Session, error) {
	return auth.Lookup(ctx, "session", id, svc.d.State.GetSession, func(s model.Session) string { return s.Tenant })
}

// checkRunner turns a running session whose runner stopped heartbeating
// into an error: its emulator died with the runner (or is unreachable), and
// a session is never silently kept as running. A runner that restarts with
// the same identity does the same for its own sessions.
func (svc *Service) checkRunner(ctx context.Context, s model.Session) (model.Session, error) {
	if alive, err := svc.d.State.RunnerAlive(ctx, s.RunnerID); alive || err != nil {
		return s, nil // a Redis hiccup is not a lost runner
	}
	lost, err := svc.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
		if x.State != model.StateRunning || x.RunnerID != s.RunnerID {
			return errStale
		}
		x.State, x.Reason = model.StateError, "lost: runner "+s.RunnerID+" stopped heartbeating and its emulator is gone"
		return nil
	})
	if errors.Is(err, errStale) {
		return svc.d.State.GetSession(ctx, s.ID)
	}
	if err == nil {
		svc.publish(events.TypeSessionFailed, lost)
		if _, err := svc.d.State.AbandonRecording(ctx, lost.RecordingID, "not stored: runner "+s.RunnerID+" stopped heartbeating while it recorded"); err != nil {
			svc.d.Log.Warn("mark recording failed", "recording", lost.RecordingID, "err", err)
		}
	}
	return lost, err
}

var errStale = errors.New("stale")

// List returns page (from 1) of size of the caller's tenant's sessions; it pages over
// that tenant's own index, so total and page sizes count only its sessions.
func (svc *Service) List(ctx context.Context, page, size int) (List, error) {
	ss, total, err := svc.d.State.ListTenantSessions(ctx, auth.Tenant(ctx), (page-1)*size, size)
	return List{Sessions: ss, Total: total, Page: page, PageSize: size}, err
}

// Reconcile repairs what a crash may leave: it indexes sessions stored
// before the per-tenant index existed and recounts every tenant's session
// quota from the stored sessions. Slots taken within grace stay, as they may
// be creates in flight on another instance. Run it at start.
func (svc *Service) Reconcile(ctx context.Context, grace time.Duration) error {
	if _, err := svc.d.State.IndexSessionTenants(ctx); err != nil {
		return err
	}
	if svc.d.Quota == nil {
		return nil
	}
	all, _, err := svc.d.State.ListSessions(ctx, 0, 1<<30)
	if err != nil {
		return err
	}
	truth := quota.Holdings{}
	for _, s := range all {
		truth.Add(model.TenantOr(s.Tenant), s.ID, 1)
	}
	tenants, err := svc.d.Quota.Tenants(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if truth[t] == nil {
			truth[t] = map[string]int64{}
		}
	}
	for t, ids := range truth {
		n, err := svc.d.Quota.Reconcile(ctx, t, quota.Sessions, ids, grace)
		if err != nil {
			return err
		}
		if n > 0 {
			svc.d.Log.Info("session quota reconciled", "tenant", t, "changed", n)
		}
	}
	return nil
}

// Runner returns a client for the session's runner (nil if that runner is
// gone). If it is gone and place is set, the session moves to a live runner
// (it has no emulator to lose then).
func (svc *Service) Runner(ctx context.Context, s *model.Session, place bool) (*runnerapi.Client, error) {
	return svc.runner(ctx, s, place)
}

// Program is what the runner needs to run programID on the session's board;
// it refuses a program that does not fit the board's memory.
func (svc *Service) Program(ctx context.Context, s model.Session, programID string) (runnerapi.Program, error) {
	return svc.program(ctx, s, programID)
}

func (svc *Service) runner(ctx context.Context, s *model.Session, place bool) (*runnerapi.Client, error) {
	r, err := svc.d.State.Runner(ctx, s.RunnerID)
	if errors.Is(err, state.ErrNotFound) && place {
		if r, err = svc.pickRunner(ctx, s.Backend, s.Machine); err != nil {
			return nil, err
		}
		*s, err = svc.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
			x.RunnerID = r.ID
			return nil
		})
	}
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return svc.Client(r)
}

// Client is the API client of runner r.
func (svc *Service) Client(r state.Runner) (*runnerapi.Client, error) {
	return runnerapi.NewClient(r.URL, svc.d.RunnerToken)
}

// Delete stops the session's emulator and removes the session. A system's
// node goes with its system.
func (svc *Service) Delete(ctx context.Context, id string) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.SystemID != "" {
		return s, fail.Conflict("session %s is a node of system %s; delete the system (DELETE /api/v1/systems/%s)", id, s.SystemID, s.SystemID)
	}
	return s, svc.remove(ctx, s)
}

// program finds a program and where it loads on the session's board.
func (svc *Service) program(ctx context.Context, s model.Session, programID string) (runnerapi.Program, error) {
	rp, _, err := svc.place(ctx, s, programID)
	return rp, err
}

// place is program that also returns the board it checked the program
// against.
func (svc *Service) place(ctx context.Context, s model.Session, programID string) (runnerapi.Program, board.Board, error) {
	if !model.ValidID(programID) {
		return runnerapi.Program{}, board.Board{}, fail.Unprocessable("program_id %q is not a program id (16 hex digits)", programID)
	}
	p, err := svc.d.State.GetProgram(ctx, programID)
	if auth.Hidden(ctx, p.Tenant, err) {
		// Another tenant's program reads exactly like a missing one.
		return runnerapi.Program{}, board.Board{}, fail.NotFound("program %s not found; upload it with POST /api/v1/programs", programID)
	}
	if err != nil {
		return runnerapi.Program{}, board.Board{}, err
	}
	if p.State == model.ProgramRejected {
		return runnerapi.Program{}, board.Board{}, fail.Unprocessable("program %s was rejected when it was registered (%s), so it has no image to load; upload a valid ELF, HEX or BIN image", p.ID, p.Reason)
	}
	caps, err := svc.Capabilities(ctx)
	if err != nil {
		return runnerapi.Program{}, board.Board{}, err
	}
	be, _ := caps.Backend(s.Backend)
	b, ok := be.Board(s.Machine)
	if !ok {
		return runnerapi.Program{}, board.Board{}, fail.Unprocessable("board %s of session %s is no longer offered", s.Machine, s.ID)
	}
	if p.Arch != "" && b.Arch != "" && p.Arch != b.Arch {
		return runnerapi.Program{}, board.Board{}, fail.Unprocessable("program %s is an ELF for %s, but board %s is %s; boards for %s: %s",
			p.ID, p.Arch, b.Name, b.Arch, p.Arch, strings.Join(be.BoardsOf(p.Arch), ", "))
	}
	rp := runnerapi.Program{ID: p.ID, Format: p.Format, SHA256: p.SHA256, BlobKey: model.ProgramImageKey(p.ID)}
	segs := p.Segments
	if p.Format == model.FormatBIN {
		rp.LoadAddress = b.Flash.Base
		if p.LoadAddress != nil {
			rp.LoadAddress = *p.LoadAddress
		}
		segs = []model.Segment{{Addr: rp.LoadAddress, Size: uint64(p.Size)}}
	}
	if err := b.Fits(segs); err != nil {
		return runnerapi.Program{}, board.Board{}, fail.Unprocessable("program %s does not fit board %s: %v", p.ID, b.Name, err)
	}
	return rp, b, nil
}

// LoadProgram sets the session's program. A running session is restarted
// with it, as flashing a real board resets it.
func (svc *Service) LoadProgram(ctx context.Context, id string, in LoadRequest) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if in.ProgramID == "" {
		return s, fail.Invalid("program_id is required")
	}
	if s.ReplayOf != "" {
		return s, Guard(s, "load another program")
	}
	rp, b, err := svc.place(ctx, s, in.ProgramID)
	if err != nil {
		return s, err
	}
	warnings := svc.bootWarnings(ctx, rp, b)
	if s, err = svc.d.State.UpdateSession(ctx, id, func(x *model.Session) error {
		x.ProgramID, x.Warnings = in.ProgramID, warnings
		return nil
	}); err != nil {
		return s, err
	}
	if s.State == model.StateRunning {
		rc, err := svc.runner(ctx, &s, false)
		if err != nil {
			return s, err
		}
		if rc != nil {
			req := nodeStart(s, rp, false)
			req.Restart, req.Coverage = true, false
			if _, err := rc.Start(ctx, id, req); err != nil {
				return s, err
			}
		}
		if s, err = svc.Get(ctx, id); err != nil {
			return s, err
		}
	} else if rc, err := svc.runner(ctx, &s, false); err == nil && rc != nil {
		// Best effort: the runner prelaunches a paused emulator so the next
		// power on is fast; without it power on is a cold start.
		req := nodeStart(s, rp, false)
		req.Coverage = false
		if err := rc.Prepare(ctx, id, req); err != nil {
			svc.d.Log.Warn("prepare", "session", id, "err", err)
		}
	}
	svc.publish(events.TypeSessionProgramLoaded, s)
	return s, nil
}

// bootWarnings are signs that the image was built for another board
// (board.BootWarnings). They cost a read of the image, so only loading
// looks for them; an image that cannot be read has none, as the load
// itself does not need it.
func (svc *Service) bootWarnings(ctx context.Context, rp runnerapi.Program, b board.Board) []string {
	data, err := blob.GetBytes(ctx, svc.d.Blobs, rp.BlobKey)
	if err != nil {
		svc.d.Log.Warn("boot checks skipped: image unreadable", "program", rp.ID, "err", err)
		return nil
	}
	var at *uint64
	if rp.Format == model.FormatBIN {
		at = &rp.LoadAddress
	}
	im, err := fwimage.Open(rp.Format, data, at)
	if err != nil {
		svc.d.Log.Warn("boot checks skipped: image invalid", "program", rp.ID, "err", err)
		return nil
	}
	return b.BootWarnings(im.Words, im.Entry)
}

// PowerOn starts the session's machine with its program.
func (svc *Service) PowerOn(ctx context.Context, id string, halted bool) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.ProgramID == "" {
		return s, fail.Conflict("session %s has no program; load one with POST /api/v1/sessions/%s/program first", id, id)
	}
	if s.State == model.StateRunning {
		return s, fail.Conflict("session %s is already running; power it off or reset it", id)
	}
	rp, err := svc.program(ctx, s, s.ProgramID)
	if err != nil {
		return s, err
	}
	// A system's node stays on the system's runner, with its links.
	rc, err := svc.runner(ctx, &s, s.SystemID == "")
	if err == nil && rc == nil {
		err = fail.Unavailable("runner %s of system %s is gone; power the system on (POST /api/v1/systems/%s/poweron) to place its nodes again", s.RunnerID, s.SystemID, s.SystemID)
	}
	if err != nil {
		return s, err
	}
	req := nodeStart(s, rp, halted)
	switch {
	case s.ReplayOf != "":
		req.Replay, err = svc.replayOf(ctx, s)
	case s.Record:
		req.Record, err = svc.startRecording(ctx, &s)
	}
	if err != nil {
		return s, err
	}
	if _, err := rc.Start(ctx, id, req); err != nil {
		if req.Record != nil {
			svc.d.State.DeleteRecording(context.WithoutCancel(ctx), req.Record.ID)
		}
		return s, err
	}
	return svc.Get(ctx, id)
}

// PowerOff stops the machine; the console history stays.
func (svc *Service) PowerOff(ctx context.Context, id string) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.State != model.StateRunning {
		return s, fail.Conflict("session %s is not running (state %s)", id, s.State)
	}
	rc, err := svc.runner(ctx, &s, false)
	if err != nil {
		return s, err
	}
	if rc != nil {
		if err := rc.Stop(ctx, id); err != nil {
			return s, err
		}
	}
	s, err = svc.Get(ctx, id)
	if err == nil && s.State == model.StateRunning {
		// The runner is gone: its emulator died with it.
		s, err = svc.d.State.UpdateSession(ctx, id, func(x *model.Session) error {
			x.State, x.Reason = model.StateStopped, ""
			return nil
		})
	}
	return s, err
}

// Reset resets a running machine.
func (svc *Service) Reset(ctx context.Context, id string) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.State != model.StateRunning {
		return s, fail.Conflict("session %s is not running (state %s); power it on first", id, s.State)
	}
	if err := Guard(s, "be reset"); err != nil {
		return s, err
	}
	rc, err := svc.runner(ctx, &s, false)
	if err != nil {
		return s, err
	}
	if rc == nil {
		return s, fail.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
	}
	if err := rc.Reset(ctx, id); err != nil {
		return s, err
	}
	// A reset changes the machine, so updated_at moves; a guest that
	// crashed QEMU on the way up is already in error here.
	if s, err = svc.d.State.UpdateSession(ctx, id, func(*model.Session) error { return nil }); err != nil {
		return s, err
	}
	if s.State == model.StateRunning {
		svc.publish(events.TypeSessionRebooted, s)
	}
	return s, nil
}

// publish carries the session's tenant as the event's tenant attribute.
func (svc *Service) publish(typ string, s model.Session) {
	if err := svc.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(s.Tenant)), typ, s.ID, s); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// GDBInfo is GET /api/v1/sessions/{id}/gdb: how to attach a debugger.
type GDBInfo struct {
	SessionID string `json:"session_id"`
	// TCP is the runner's debugger port for this session (direct path).
	TCP string `json:"tcp"`
	// WebSocket carries the raw RSP stream (the tunnel: no open port needed).
	WebSocket string              `json:"websocket"`
	Attached  *runnerapi.Debugger `json:"attached,omitempty"`
	Snippets  GDBSnippets         `json:"snippets"`
}

// GDBSnippets are ready to paste.
type GDBSnippets struct {
	GDB    string         `json:"gdb"`
	Msctl  string         `json:"msctl"`
	VSCode map[string]any `json:"vscode_launch"`
	// HaltedPowerOn stops the CPU at the reset vector so a debugger can
	// attach before the first instruction.
	HaltedPowerOn string `json:"halted_poweron"`
}

// GDB says how to debug a session: the direct port, the tunnel, snippets.
func (svc *Service) GDB(ctx context.Context, id, base string) (GDBInfo, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return GDBInfo{}, err
	}
	rc, err := svc.runner(ctx, &s, true)
	if err != nil {
		return GDBInfo{}, err
	}
	g, err := rc.GDB(ctx, id)
	if err != nil {
		return GDBInfo{}, err
	}
	ws := "ws" + strings.TrimPrefix(base, "http") + "/api/v1/sessions/" + id + "/stream/gdb"
	gdbPath := "gdb-multiarch"
	vscode := map[string]any{
		"name": "Machine Server " + s.Name, "type": "cortex-debug", "request": "attach",
		"servertype": "external", "gdbTarget": g.TCP,
		"executable": "${workspaceFolder}/path/to/firmware.elf",
	}
	if caps, err := svc.Capabilities(ctx); err == nil {
		be, _ := caps.Backend(s.Backend)
		if b, ok := be.Board(s.Machine); ok && b.Debugger != "" {
			gdbPath = b.Debugger
			if b.Arch != board.ArchARM {
				// cortex-debug is for Cortex-M; other cores attach through
				// the C/C++ extension's GDB front end.
				vscode = map[string]any{
					"name": "Machine Server " + s.Name, "type": "cppdbg", "request": "launch",
					"program": "${workspaceFolder}/path/to/firmware.elf", "cwd": "${workspaceFolder}",
					"MIMode": "gdb", "miDebuggerServerAddress": g.TCP,
				}
			}
		}
	}
	if vscode["type"] == "cppdbg" {
		vscode["miDebuggerPath"] = gdbPath
	} else {
		vscode["gdbPath"] = gdbPath
	}
	return GDBInfo{
		SessionID: id, TCP: g.TCP, WebSocket: ws, Attached: g.Attached,
		Snippets: GDBSnippets{
			GDB:    fmt.Sprintf("%s firmware.elf -ex 'target extended-remote %s'", gdbPath, g.TCP),
			Msctl:  fmt.Sprintf("msctl gdb %s --listen 127.0.0.1:3333 --server %s", id, base),
			VSCode: vscode,
			// With the caller's API key from the environment, as the
			// walkthrough keeps it, so the line works pasted as it is.
			HaltedPowerOn: fmt.Sprintf(`curl -X POST -H "Authorization: ApiKey $MS_API_KEY" '%s/api/v1/sessions/%s/poweron?halted=true'`, base, id),
		},
	}, nil
}

// Health reports what the function is connected to.
func (svc *Service) Health(ctx context.Context) (map[string]any, error) {
	if err := svc.d.State.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	rs, _ := svc.d.State.Runners(ctx)
	ids := []string{}
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return map[string]any{"status": "ok", "redis": svc.d.State.Addr(), "runners": ids}, nil
}
