package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Deps are the handler's collaborators.
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

// Handler serves the sessions function.
type Handler struct {
	d      Deps
	source string
}

// New returns the handler.
func New(d Deps) *Handler {
	return &Handler{d: d, source: events.Source("sessions")}
}

const maxBody = 64 << 10

// CreateRequest is POST /api/v1/sessions.
type CreateRequest struct {
	Name        string            `json:"name"`
	Backend     string            `json:"backend"`
	BoardConfig model.BoardConfig `json:"board_config"`
	// Coverage collects coverage from the first power on.
	Coverage bool `json:"coverage,omitempty"`
	// Limits cap the emulator's CPU (percent of one core, 1-100) and memory
	// (16-4096 MB); omitted fields take the runner's defaults.
	Limits *model.Limits `json:"limits,omitempty"`
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
func (h *Handler) Capabilities(ctx context.Context) (board.Capabilities, error) {
	rs, err := h.d.State.Runners(ctx)
	if err != nil {
		return board.Capabilities{}, err
	}
	if len(rs) == 0 {
		return board.Capabilities{}, httpapi.Unavailable("no runner is registered; capabilities come from the runners' emulators")
	}
	return rs[0].Capabilities, nil
}

func validName(n string) error {
	if n == "" || len(n) > 128 {
		return httpapi.BadRequest("name is required and must be 1 to 128 characters")
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return httpapi.BadRequest("name must contain printable characters only")
		}
	}
	return nil
}

// Create validates the request, resolves the board, picks a runner and stores
// the session in state created.
func (h *Handler) Create(ctx context.Context, in CreateRequest) (model.Session, error) {
	if err := validName(in.Name); err != nil {
		return model.Session{}, err
	}
	if err := runnerapi.CheckLimits(in.Limits); err != nil {
		return model.Session{}, err
	}
	if in.Backend == "" {
		in.Backend = "qemu"
	}
	caps, err := h.Capabilities(ctx)
	if err != nil {
		return model.Session{}, err
	}
	if err := checkLimits(in.Limits, caps); err != nil {
		return model.Session{}, err
	}
	be, ok := caps.Backend(in.Backend)
	if !ok {
		var names []string
		for _, b := range caps.Backends {
			names = append(names, b.Name)
		}
		return model.Session{}, httpapi.Unprocessable("backend %q is not available; available backends: %s", in.Backend, strings.Join(names, ", "))
	}
	b, err := be.Resolve(in.BoardConfig)
	if err != nil {
		var nf *board.NoFitError
		if errors.As(err, &nf) {
			e := httpapi.Unprocessable("%s", err.Error())
			e.Code, e.Details = "no_matching_board", map[string]any{"candidates": nf.Candidates}
			return model.Session{}, e
		}
		return model.Session{}, httpapi.Unprocessable("%s", err.Error())
	}
	r, err := h.pickRunner(ctx)
	if err != nil {
		return model.Session{}, err
	}
	now := time.Now().UTC()
	s := model.Session{
		ID: model.NewID(), Tenant: auth.Tenant(ctx), Name: in.Name, Backend: in.Backend, BoardConfig: in.BoardConfig,
		Machine: b.Name, State: model.StateCreated, RunnerID: r.ID, CreatedAt: now, UpdatedAt: now,
		Coverage: in.Coverage, Limits: in.Limits,
	}
	if err := h.d.Quota.Acquire(ctx, s.Tenant, quota.Sessions, s.ID, 1); err != nil {
		return model.Session{}, err
	}
	if err := h.d.State.CreateSession(ctx, s); err != nil {
		h.release(ctx, s)
		return model.Session{}, err
	}
	h.publish(events.TypeSessionCreated, s)
	return s, nil
}

func (h *Handler) pickRunner(ctx context.Context) (state.Runner, error) {
	rs, err := h.d.State.Runners(ctx)
	if err != nil {
		return state.Runner{}, err
	}
	if len(rs) == 0 || rs[0].Free() <= 0 {
		return state.Runner{}, httpapi.Unavailable("no runner has free capacity; try again later")
	}
	return rs[0], nil
}

// release gives a session's quota slot back. The session is already gone,
// so a failure is only logged: Reconcile repairs the count.
func (h *Handler) release(ctx context.Context, s model.Session) {
	if err := h.d.Quota.Release(context.WithoutCancel(ctx), model.TenantOr(s.Tenant), quota.Sessions, s.ID); err != nil {
		h.d.Log.Warn("quota release", "session", s.ID, "err", err)
	}
}

// Get returns a session of the caller's tenant (from ctx) or a 404. It is
// the one place every session operation, stream and coverage call goes
// through, so a session of another tenant is answered exactly like an
// unknown id and ids do not leak.
func (h *Handler) Get(ctx context.Context, id string) (model.Session, error) {
	s, err := h.Owned(ctx, id)
	if err == nil && s.State == model.StateRunning {
		s, err = h.checkRunner(ctx, s)
	}
	return s, err
}

// Owned is the caller's session as stored, or a 404, without Get's check
// that a running session's runner lives: for callers that read the runner
// record anyway (and call Get when it is gone).
func (h *Handler) Owned(ctx context.Context, id string) (model.Session, error) {
	if !model.ValidID(id) {
		return model.Session{}, httpapi.NotFound("session %q not found (ids are 16 hex digits)", id)
	}
	s, err := h.d.State.GetSession(ctx, id)
	if auth.Hidden(ctx, s.Tenant, err) {
		return model.Session{}, httpapi.NotFound("session %s not found", id)
	}
	return s, err
}

// checkRunner turns a running session whose runner stopped heartbeating
// into an error: its emulator died with the runner (or is unreachable), and
// a session is never silently kept as running. A runner that restarts with
// the same identity does the same for its own sessions.
func (h *Handler) checkRunner(ctx context.Context, s model.Session) (model.Session, error) {
	if alive, err := h.d.State.RunnerAlive(ctx, s.RunnerID); alive || err != nil {
		return s, nil // a Redis hiccup is not a lost runner
	}
	lost, err := h.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
		if x.State != model.StateRunning || x.RunnerID != s.RunnerID {
			return errStale
		}
		x.State, x.Reason = model.StateError, "lost: runner "+s.RunnerID+" stopped heartbeating and its emulator is gone"
		return nil
	})
	if errors.Is(err, errStale) {
		return h.d.State.GetSession(ctx, s.ID)
	}
	if err == nil {
		h.publish(events.TypeSessionFailed, lost)
	}
	return lost, err
}

var errStale = errors.New("stale")

// List returns one page of the caller's tenant's sessions; it pages over
// that tenant's own index, so total and page sizes count only its sessions.
func (h *Handler) List(ctx context.Context, p httpapi.Page) (List, error) {
	ss, total, err := h.d.State.ListTenantSessions(ctx, auth.Tenant(ctx), p.Offset(), p.Size)
	return List{Sessions: ss, Total: total, Page: p.Page, PageSize: p.Size}, err
}

// Reconcile repairs what a crash may leave: it indexes sessions stored
// before the per-tenant index existed and recounts every tenant's session
// quota from the stored sessions. Slots taken within grace stay, as they may
// be creates in flight on another instance. Run it at start.
func (h *Handler) Reconcile(ctx context.Context, grace time.Duration) error {
	if _, err := h.d.State.IndexSessionTenants(ctx); err != nil {
		return err
	}
	if h.d.Quota == nil {
		return nil
	}
	all, _, err := h.d.State.ListSessions(ctx, 0, 1<<30)
	if err != nil {
		return err
	}
	truth := map[string]map[string]int64{}
	for _, s := range all {
		t := model.TenantOr(s.Tenant)
		if truth[t] == nil {
			truth[t] = map[string]int64{}
		}
		truth[t][s.ID] = 1
	}
	tenants, err := h.d.Quota.Tenants(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if truth[t] == nil {
			truth[t] = map[string]int64{}
		}
	}
	for t, ids := range truth {
		n, err := h.d.Quota.Reconcile(ctx, t, quota.Sessions, ids, grace)
		if err != nil {
			return err
		}
		if n > 0 {
			h.d.Log.Info("session quota reconciled", "tenant", t, "changed", n)
		}
	}
	return nil
}

// Runner returns a client for the session's runner (nil if that runner is
// gone). If it is gone and place is set, the session moves to a live runner
// (it has no emulator to lose then).
func (h *Handler) Runner(ctx context.Context, s *model.Session, place bool) (*runnerapi.Client, error) {
	return h.runner(ctx, s, place)
}

// Program is what the runner needs to run programID on the session's board;
// it refuses a program that does not fit the board's memory.
func (h *Handler) Program(ctx context.Context, s model.Session, programID string) (runnerapi.Program, error) {
	return h.program(ctx, s, programID)
}

func (h *Handler) runner(ctx context.Context, s *model.Session, place bool) (*runnerapi.Client, error) {
	r, err := h.d.State.Runner(ctx, s.RunnerID)
	if errors.Is(err, state.ErrNotFound) && place {
		if r, err = h.pickRunner(ctx); err != nil {
			return nil, err
		}
		*s, err = h.d.State.UpdateSession(ctx, s.ID, func(x *model.Session) error {
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
	return h.Client(r)
}

// Client is the API client of runner r.
func (h *Handler) Client(r state.Runner) (*runnerapi.Client, error) {
	return runnerapi.NewClient(r.URL, h.d.RunnerToken)
}

// Delete stops the session's emulator and removes the session.
func (h *Handler) Delete(ctx context.Context, id string) (model.Session, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return s, err
	}
	rc, err := h.runner(ctx, &s, false)
	if err != nil {
		return s, err
	}
	if rc != nil {
		if err := rc.Delete(ctx, id); err != nil {
			return s, err
		}
	}
	if err := h.d.State.DeleteSession(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return s, err
	}
	h.release(ctx, s)
	h.publish(events.TypeSessionDeleted, s)
	return s, nil
}

// program finds a program and where it loads on the session's board.
func (h *Handler) program(ctx context.Context, s model.Session, programID string) (runnerapi.Program, error) {
	rp, _, err := h.place(ctx, s, programID)
	return rp, err
}

// place is program that also returns the board it checked the program
// against.
func (h *Handler) place(ctx context.Context, s model.Session, programID string) (runnerapi.Program, board.Board, error) {
	if !model.ValidID(programID) {
		return runnerapi.Program{}, board.Board{}, httpapi.Unprocessable("program_id %q is not a program id (16 hex digits)", programID)
	}
	p, err := h.d.State.GetProgram(ctx, programID)
	if auth.Hidden(ctx, p.Tenant, err) {
		// Another tenant's program reads exactly like a missing one.
		return runnerapi.Program{}, board.Board{}, httpapi.NotFound("program %s not found; upload it with POST /api/v1/programs", programID)
	}
	if err != nil {
		return runnerapi.Program{}, board.Board{}, err
	}
	if p.State == model.ProgramRejected {
		return runnerapi.Program{}, board.Board{}, httpapi.Unprocessable("program %s was rejected when it was registered (%s), so it has no image to load; upload a valid ELF, HEX or BIN image", p.ID, p.Reason)
	}
	caps, err := h.Capabilities(ctx)
	if err != nil {
		return runnerapi.Program{}, board.Board{}, err
	}
	be, _ := caps.Backend(s.Backend)
	b, ok := be.Board(s.Machine)
	if !ok {
		return runnerapi.Program{}, board.Board{}, httpapi.Unprocessable("board %s of session %s is no longer offered", s.Machine, s.ID)
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
		return runnerapi.Program{}, board.Board{}, httpapi.Unprocessable("program %s does not fit board %s: %v", p.ID, b.Name, err)
	}
	return rp, b, nil
}

// LoadProgram sets the session's program. A running session is restarted
// with it, as flashing a real board resets it.
func (h *Handler) LoadProgram(ctx context.Context, id string, in LoadRequest) (model.Session, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if in.ProgramID == "" {
		return s, httpapi.BadRequest("program_id is required")
	}
	rp, b, err := h.place(ctx, s, in.ProgramID)
	if err != nil {
		return s, err
	}
	warnings := h.bootWarnings(ctx, rp, b)
	if s, err = h.d.State.UpdateSession(ctx, id, func(x *model.Session) error {
		x.ProgramID, x.Warnings = in.ProgramID, warnings
		return nil
	}); err != nil {
		return s, err
	}
	if s.State == model.StateRunning {
		rc, err := h.runner(ctx, &s, false)
		if err != nil {
			return s, err
		}
		if rc != nil {
			if _, err := rc.Start(ctx, id, runnerapi.StartRequest{Machine: s.Machine, Program: rp, Restart: true, Limits: s.Limits}); err != nil {
				return s, err
			}
		}
		if s, err = h.Get(ctx, id); err != nil {
			return s, err
		}
	} else if rc, err := h.runner(ctx, &s, false); err == nil && rc != nil {
		// Best effort: the runner prelaunches a paused emulator so the next
		// power on is fast; without it power on is a cold start.
		if err := rc.Prepare(ctx, id, runnerapi.StartRequest{Machine: s.Machine, Program: rp, Limits: s.Limits}); err != nil {
			h.d.Log.Warn("prepare", "session", id, "err", err)
		}
	}
	h.publish(events.TypeSessionProgramLoaded, s)
	return s, nil
}

// bootWarnings are signs that the image was built for another board
// (board.BootWarnings). They cost a read of the image, so only loading
// looks for them; an image that cannot be read has none, as the load
// itself does not need it.
func (h *Handler) bootWarnings(ctx context.Context, rp runnerapi.Program, b board.Board) []string {
	data, err := blob.GetBytes(ctx, h.d.Blobs, rp.BlobKey)
	if err != nil {
		h.d.Log.Warn("boot checks skipped: image unreadable", "program", rp.ID, "err", err)
		return nil
	}
	var at *uint64
	if rp.Format == model.FormatBIN {
		at = &rp.LoadAddress
	}
	im, err := fwimage.Open(rp.Format, data, at)
	if err != nil {
		h.d.Log.Warn("boot checks skipped: image invalid", "program", rp.ID, "err", err)
		return nil
	}
	return b.BootWarnings(im.Words, im.Entry)
}

// PowerOn starts the session's machine with its program.
func (h *Handler) PowerOn(ctx context.Context, id string, halted bool) (model.Session, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.ProgramID == "" {
		return s, httpapi.Conflict("session %s has no program; load one with POST /api/v1/sessions/%s/program first", id, id)
	}
	if s.State == model.StateRunning {
		return s, httpapi.Conflict("session %s is already running; power it off or reset it", id)
	}
	rp, err := h.program(ctx, s, s.ProgramID)
	if err != nil {
		return s, err
	}
	rc, err := h.runner(ctx, &s, true)
	if err != nil {
		return s, err
	}
	if _, err := rc.Start(ctx, id, runnerapi.StartRequest{Machine: s.Machine, Program: rp, Halted: halted, Coverage: s.Coverage, Limits: s.Limits}); err != nil {
		return s, err
	}
	return h.Get(ctx, id)
}

// PowerOff stops the machine; the console history stays.
func (h *Handler) PowerOff(ctx context.Context, id string) (model.Session, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.State != model.StateRunning {
		return s, httpapi.Conflict("session %s is not running (state %s)", id, s.State)
	}
	rc, err := h.runner(ctx, &s, false)
	if err != nil {
		return s, err
	}
	if rc != nil {
		if err := rc.Stop(ctx, id); err != nil {
			return s, err
		}
	}
	s, err = h.Get(ctx, id)
	if err == nil && s.State == model.StateRunning {
		// The runner is gone: its emulator died with it.
		s, err = h.d.State.UpdateSession(ctx, id, func(x *model.Session) error {
			x.State, x.Reason = model.StateStopped, ""
			return nil
		})
	}
	return s, err
}

// Reset resets a running machine.
func (h *Handler) Reset(ctx context.Context, id string) (model.Session, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.State != model.StateRunning {
		return s, httpapi.Conflict("session %s is not running (state %s); power it on first", id, s.State)
	}
	rc, err := h.runner(ctx, &s, false)
	if err != nil {
		return s, err
	}
	if rc == nil {
		return s, httpapi.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
	}
	if err := rc.Reset(ctx, id); err != nil {
		return s, err
	}
	// A reset changes the machine, so updated_at moves; a guest that
	// crashed QEMU on the way up is already in error here.
	if s, err = h.d.State.UpdateSession(ctx, id, func(*model.Session) error { return nil }); err != nil {
		return s, err
	}
	if s.State == model.StateRunning {
		h.publish(events.TypeSessionRebooted, s)
	}
	return s, nil
}

// publish carries the session's tenant as the event's tenant attribute.
func (h *Handler) publish(typ string, s model.Session) {
	if err := h.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(s.Tenant)), typ, s.ID, s); err != nil {
		h.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// Routes mounts the REST API on mux.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/capabilities", func(w http.ResponseWriter, r *http.Request) {
		c, err := h.Capabilities(r.Context())
		httpapi.Reply(w, r, http.StatusOK, c, err)
	})
	mux.HandleFunc("POST /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var in CreateRequest
		if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		s, err := h.Create(r.Context(), in)
		httpapi.Reply(w, r, http.StatusCreated, s, err)
	})
	mux.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		p, err := httpapi.ParsePage(r)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		l, err := h.List(r.Context(), p)
		httpapi.Reply(w, r, http.StatusOK, l, err)
	})
	mux.HandleFunc("GET /api/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		s, err := h.Get(r.Context(), r.PathValue("id"))
		httpapi.Reply(w, r, http.StatusOK, s, err)
	})
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, err := h.Delete(r.Context(), r.PathValue("id"))
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/program", func(w http.ResponseWriter, r *http.Request) {
		var in LoadRequest
		if err := httpapi.DecodeJSON(r, &in, maxBody); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		s, err := h.LoadProgram(r.Context(), r.PathValue("id"), in)
		httpapi.Reply(w, r, http.StatusOK, s, err)
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/poweron", func(w http.ResponseWriter, r *http.Request) {
		halted := false
		if v := r.URL.Query().Get("halted"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				httpapi.WriteError(w, r, httpapi.BadRequest("halted must be true or false; got %q", v))
				return
			}
			halted = b
		}
		s, err := h.PowerOn(r.Context(), r.PathValue("id"), halted)
		httpapi.Reply(w, r, http.StatusOK, s, err)
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/poweroff", func(w http.ResponseWriter, r *http.Request) {
		s, err := h.PowerOff(r.Context(), r.PathValue("id"))
		httpapi.Reply(w, r, http.StatusOK, s, err)
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/reset", func(w http.ResponseWriter, r *http.Request) {
		s, err := h.Reset(r.Context(), r.PathValue("id"))
		httpapi.Reply(w, r, http.StatusOK, s, err)
	})
	mux.HandleFunc("GET /api/v1/sessions/{id}/console", h.console)
	mux.HandleFunc("POST /api/v1/sessions/{id}/console", h.consoleInput)
	mux.HandleFunc("GET /api/v1/sessions/{id}/stream/console", h.stream("console"))
	mux.HandleFunc("GET /api/v1/sessions/{id}/stream/gdb", h.stream("gdb"))
	// Short-lived tokens that open only this session's console or gdb stream.
	mux.Handle("POST /api/v1/sessions/{id}/tokens", auth.SessionTokenHandler(func(ctx context.Context, id string) (string, error) {
		s, err := h.Get(ctx, id)
		return s.Tenant, err
	}))
	h.coverageRoutes(mux)
	h.d.Quota.Routes(mux)
	mux.HandleFunc("GET /api/v1/sessions/{id}/gdb", func(w http.ResponseWriter, r *http.Request) {
		g, err := h.GDB(r.Context(), r.PathValue("id"), baseURL(r))
		httpapi.Reply(w, r, http.StatusOK, g, err)
	})
}

// console returns the UART history from ?offset= as raw bytes; the
// X-Console-Offset and X-Console-Next-Offset headers say where the bytes
// start and where to continue.
func (h *Handler) console(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := h.Get(r.Context(), id)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	off := int64(0)
	if v := q.Get("offset"); v != "" {
		if off, err = strconv.ParseInt(v, 10, 64); err != nil || off < 0 {
			httpapi.WriteError(w, r, httpapi.BadRequest("offset must be a byte offset >= 0; got %q", v))
			return
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			httpapi.WriteError(w, r, httpapi.BadRequest("limit must be a positive number of bytes; got %q", v))
			return
		}
	}
	var data []byte
	var from, next int64
	rc, err := h.runner(r.Context(), &s, false)
	if err == nil && rc != nil {
		data, from, next, err = rc.Console(r.Context(), id, off, limit)
	}
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(runnerapi.HeaderOffset, strconv.FormatInt(from, 10))
	w.Header().Set(runnerapi.HeaderNextOffset, strconv.FormatInt(next, 10))
	w.Write(data)
}

func (h *Handler) consoleInput(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := h.Get(r.Context(), id)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(data) > maxBody {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "console input is limited to %d bytes per request", maxBody))
		return
	}
	if s.State != model.StateRunning {
		httpapi.WriteError(w, r, httpapi.Conflict("session %s is not running (state %s); console input needs a running machine", id, s.State))
		return
	}
	rc, err := h.runner(r.Context(), &s, false)
	if err == nil && rc == nil {
		err = httpapi.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
	}
	if err == nil {
		err = rc.Input(r.Context(), id, data)
	}
	httpapi.Reply(w, r, http.StatusOK, map[string]int{"written": len(data)}, err)
}

// stream proxies a WebSocket stream (the console or the gdb tunnel) to the
// session's runner, which owns the emulator, the console ring and the
// debugger endpoint.
func (h *Handler) stream(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		s, err := h.Get(r.Context(), id)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		rc, err := h.runner(r.Context(), &s, false)
		if err == nil && rc == nil {
			err = httpapi.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
		}
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		rc.Proxy(runnerapi.SessionPath(id)+"/stream/"+kind).ServeHTTP(w, r)
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
func (h *Handler) GDB(ctx context.Context, id, base string) (GDBInfo, error) {
	s, err := h.Get(ctx, id)
	if err != nil {
		return GDBInfo{}, err
	}
	rc, err := h.runner(ctx, &s, true)
	if err != nil {
		return GDBInfo{}, err
	}
	g, err := rc.GDB(ctx, id)
	if err != nil {
		return GDBInfo{}, err
	}
	ws := "ws" + strings.TrimPrefix(base, "http") + "/api/v1/sessions/" + id + "/stream/gdb"
	return GDBInfo{
		SessionID: id, TCP: g.TCP, WebSocket: ws, Attached: g.Attached,
		Snippets: GDBSnippets{
			GDB:   fmt.Sprintf("gdb-multiarch firmware.elf -ex 'target extended-remote %s'", g.TCP),
			Msctl: fmt.Sprintf("msctl gdb %s --listen 127.0.0.1:3333 --server %s", id, base),
			VSCode: map[string]any{
				"name": "Machine Server " + s.Name, "type": "cortex-debug", "request": "attach",
				"servertype": "external", "gdbTarget": g.TCP, "gdbPath": "gdb-multiarch",
				"executable": "${workspaceFolder}/path/to/firmware.elf",
			},
			// With the caller's API key from the environment, as the
			// walkthrough keeps it, so the line works pasted as it is.
			HaltedPowerOn: fmt.Sprintf(`curl -X POST -H "Authorization: ApiKey $MS_API_KEY" '%s/api/v1/sessions/%s/poweron?halted=true'`, base, id),
		},
	}, nil
}

// baseURL is the API's external URL as the client sees it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// Events returns the CloudEvents receiver: each command type runs the same
// operation as its REST route and replies with the resulting notification.
func (h *Handler) Events(ctx context.Context) (http.Handler, error) {
	ref := func(e cloudevents.Event) (string, error) {
		var in events.SessionRef
		if err := cmdevent.Decode(e, &in); err != nil {
			return "", err
		}
		if in.SessionID == "" {
			return "", httpapi.BadRequest("session_id is required")
		}
		return in.SessionID, nil
	}
	simple := func(typ string, op func(context.Context, string) (model.Session, error)) cmdevent.Op {
		return func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			id, err := ref(e)
			if err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := op(ctx, id)
			return cmdevent.Reply{Type: typ, Subject: s.ID, Data: s}, err
		}
	}
	// A guest that crashes QEMU as it starts or resets is answered with
	// the failure, not with started or rebooted.
	orFailed := func(op cmdevent.Op) cmdevent.Op {
		return func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			r, err := op(ctx, e)
			if s, ok := r.Data.(model.Session); ok && err == nil && s.State == model.StateError {
				r.Type = events.TypeSessionFailed
			}
			return r, err
		}
	}
	ops := map[string]cmdevent.Op{
		events.TypeSessionCreate: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.CreateSession
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.Create(ctx, CreateRequest{Name: in.Name, Backend: in.Backend, BoardConfig: in.BoardConfig})
			return cmdevent.Reply{Type: events.TypeSessionCreated, Subject: s.ID, Data: s}, err
		},
		events.TypeSessionLoadProgram: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.LoadProgram
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			s, err := h.LoadProgram(ctx, in.SessionID, LoadRequest{ProgramID: in.ProgramID})
			return cmdevent.Reply{Type: events.TypeSessionProgramLoaded, Subject: s.ID, Data: s}, err
		},
		events.TypeSessionDelete: simple(events.TypeSessionDeleted, h.Delete),
		events.TypeSessionPowerOn: orFailed(simple(events.TypeSessionStarted, func(ctx context.Context, id string) (model.Session, error) {
			return h.PowerOn(ctx, id, false)
		})),
		events.TypeSessionPowerOff: simple(events.TypeSessionStopped, h.PowerOff),
		events.TypeSessionReset:    orFailed(simple(events.TypeSessionRebooted, h.Reset)),
	}
	return cmdevent.Handler(ctx, h.source, ops, h.d.Log)
}

// Health reports what the function is connected to.
func (h *Handler) Health(ctx context.Context) (map[string]any, error) {
	if err := h.d.State.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	rs, _ := h.d.State.Runners(ctx)
	ids := []string{}
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return map[string]any{"status": "ok", "redis": h.d.State.Addr(), "runners": ids}, nil
}
