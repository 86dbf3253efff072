package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

// Deps are the handler's collaborators.
type Deps struct {
	State     *state.Store
	Blobs     blob.Store
	Publisher events.Publisher
	// MaxUpload bounds an image's size in bytes.
	MaxUpload int64
	Log       *slog.Logger
	// Watches are the buckets whose new objects become programs (bucket
	// notifications); none means notifications are refused.
	Watches []Watch
	// OnStored, when set, is called with every newly stored program, besides
	// the program.stored event: the standalone server starts the jobs of
	// matching job rules this way. It must not block for long.
	OnStored func(ctx context.Context, p model.Program)
	// WebhookToken lets a store post bucket notifications without an API
	// key, as ?token= on the webhook URL; empty requires a key.
	WebhookToken string
	// Quota counts stored image bytes against the tenant's storage quota;
	// nil is unlimited.
	Quota *quota.Quota
}

// Handler serves the programs function.
type Handler struct {
	d      Deps
	source string
}

// New returns the handler.
func New(d Deps) *Handler {
	if d.MaxUpload <= 0 {
		d.MaxUpload = 16 << 20
	}
	return &Handler{d: d, source: events.Source("programs")}
}

// Upload is one image to store.
type Upload struct {
	Name        string
	Format      string // empty: detected from content (ELF, HEX)
	LoadAddress *uint64
	Data        []byte
}

// List is GET /api/v1/programs.
type List struct {
	Programs []model.Program `json:"programs"`
	Total    int             `json:"total"`
	Page     int             `json:"page"`
	PageSize int             `json:"page_size"`
}

func tooLarge(max int64) error {
	return httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "firmware image is larger than the limit of %d bytes", max)
}

// Store validates and stores an image: blob image, then manifest, then the
// index entry, so a crash leaves at worst an orphan image, never a program
// without its bytes.
func (h *Handler) Store(ctx context.Context, in Upload) (model.Program, error) {
	name := strings.TrimSpace(in.Name)
	if name == "" || len(name) > 128 || strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return model.Program{}, httpapi.BadRequest("name is required: 1 to 128 printable characters")
	}
	if int64(len(in.Data)) > h.d.MaxUpload {
		return model.Program{}, tooLarge(h.d.MaxUpload)
	}
	var format model.Format
	var err error
	if in.Format == "" {
		format, err = fwimage.Detect(in.Data)
	} else {
		format, err = fwimage.ParseFormat(in.Format)
	}
	if err != nil {
		return model.Program{}, invalid(err)
	}
	info, err := fwimage.Parse(format, in.Data, in.LoadAddress)
	if err != nil {
		return model.Program{}, invalid(err)
	}
	p := model.Program{
		ID: model.NewID(), Tenant: auth.Tenant(ctx), Name: name, Format: format, LoadAddress: in.LoadAddress,
		Size: info.Size, SHA256: info.SHA256, Entry: info.Entry, Segments: info.Segments, Arch: info.Machine,
		CreatedAt: time.Now().UTC(), State: StateStored,
	}
	if err := h.save(ctx, p, in.Data); err != nil {
		return model.Program{}, err
	}
	metrics.ProgramUploaded()
	h.announce(ctx, p)
	return p, nil
}

// save writes the image (when there is one: a rejected program has none),
// then the manifest, then the index entry, so a crash leaves at worst an
// orphan image, never a manifest or an index entry without its bytes.
func (h *Handler) save(ctx context.Context, p model.Program, image []byte) (err error) {
	if image != nil {
		// The bytes are reserved before they are written, so concurrent
		// uploads cannot together pass the tenant's storage quota.
		if err := h.d.Quota.Acquire(ctx, p.Tenant, quota.Storage, quota.ProgramKey(p.ID), int64(len(image))); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				h.d.Quota.Release(context.WithoutCancel(ctx), p.Tenant, quota.Storage, quota.ProgramKey(p.ID))
			}
		}()
		if err := h.d.Blobs.Put(ctx, model.ProgramImageKey(p.ID), bytes.NewReader(image), int64(len(image)), "application/octet-stream"); err != nil {
			return fmt.Errorf("store image: %w", err)
		}
	}
	manifest, _ := json.MarshalIndent(p, "", "  ")
	if err := h.d.Blobs.Put(ctx, model.ProgramManifestKey(p.ID), bytes.NewReader(manifest), int64(len(manifest)), "application/json"); err != nil {
		if image != nil {
			h.d.Blobs.Remove(context.WithoutCancel(ctx), model.ProgramImageKey(p.ID))
		}
		return fmt.Errorf("store manifest: %w", err)
	}
	return h.d.State.PutProgram(ctx, p)
}

// announce publishes a new program (stored or rejected) and hands stored
// ones to OnStored.
func (h *Handler) announce(ctx context.Context, p model.Program) {
	if p.State == StateRejected {
		h.publish(events.TypeProgramRejected, p)
		return
	}
	h.publish(events.TypeProgramStored, p)
	if h.d.OnStored != nil {
		h.d.OnStored(context.WithoutCancel(ctx), p)
	}
}

// invalid turns a validation error into a 4xx; anything else stays internal.
func invalid(err error) error {
	var fe *fwimage.Error
	if errors.As(err, &fe) {
		return httpapi.Unprocessable("%s", fe.Msg)
	}
	return err
}

// Get returns a program or a 404.
func (h *Handler) Get(ctx context.Context, id string) (model.Program, error) {
	if !model.ValidID(id) {
		return model.Program{}, httpapi.NotFound("program %q not found (ids are 16 hex digits)", id)
	}
	p, err := h.d.State.GetProgram(ctx, id)
	// Another tenant's program is answered like a missing one, so ids do
	// not leak.
	if auth.Hidden(ctx, p.Tenant, err) {
		return model.Program{}, httpapi.NotFound("program %s not found", id)
	}
	return p, err
}

// List returns one page of the caller's tenant's programs, oldest first.
func (h *Handler) List(ctx context.Context, pg httpapi.Page) (List, error) {
	// The index is not per tenant, so the page is cut after filtering.
	all, _, err := h.d.State.ListPrograms(ctx, 0, 1<<30)
	if err != nil {
		return List{}, err
	}
	ps := []model.Program{}
	for _, p := range all {
		if auth.Owns(ctx, p.Tenant) {
			ps = append(ps, p)
		}
	}
	total := len(ps)
	ps = ps[min(pg.Offset(), total):min(pg.Offset()+pg.Size, total)]
	return List{Programs: ps, Total: total, Page: pg.Page, PageSize: pg.Size}, nil
}

// Delete removes a program that no session uses: index first (it disappears
// from the API), then manifest, then image.
func (h *Handler) Delete(ctx context.Context, id string) (model.Program, error) {
	p, err := h.Get(ctx, id)
	if err != nil {
		return p, err
	}
	ss, _, err := h.d.State.ListSessions(ctx, 0, 1<<30)
	if err != nil {
		return p, err
	}
	var users []string
	for _, s := range ss {
		if s.ProgramID == id {
			users = append(users, s.ID)
		}
	}
	if len(users) > 0 {
		return p, httpapi.Conflict("program %s is loaded in sessions %s; delete them or load another program first", id, strings.Join(users, ", "))
	}
	if err := h.d.State.DeleteProgram(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return p, err
	}
	if p.SourceKey != "" {
		// Only if it still points here: a newer version may have replaced it.
		h.d.State.UnsetProgramKey(ctx, p.SourceKey, id)
	}
	for _, k := range []string{model.ProgramManifestKey(id), model.ProgramImageKey(id)} {
		if err := h.d.Blobs.Remove(ctx, k); err != nil {
			return p, fmt.Errorf("remove %s: %w", k, err)
		}
	}
	if err := h.d.Quota.Release(ctx, model.TenantOr(p.Tenant), quota.Storage, quota.ProgramKey(id)); err != nil {
		h.d.Log.Warn("release storage quota", "program", id, "err", err)
	}
	h.publish(events.TypeProgramDeleted, p)
	return p, nil
}

// Reindex rebuilds the Redis index from the manifests in the blob store,
// and recounts each tenant's stored program bytes for the storage quota.
func (h *Handler) Reindex(ctx context.Context) (int, error) {
	n := 0
	held := map[string]map[string]int64{}
	err := blob.Manifests(ctx, h.d.Blobs, "programs/", func(v model.Program) error {
		if !model.ValidID(v.ID) {
			h.d.Log.Warn("skipping program manifest without a valid id", "id", v.ID)
			return nil
		}
		n++
		if v.State != StateRejected {
			t := model.TenantOr(v.Tenant)
			if held[t] == nil {
				held[t] = map[string]int64{}
			}
			held[t][quota.ProgramKey(v.ID)] = v.Size
		}
		if v.SourceKey != "" && v.State == StateStored {
			h.reindexKey(ctx, v)
		}
		return h.d.State.PutProgram(ctx, v)
	}, func(key string, err error) {
		h.d.Log.Warn("skipping unreadable program manifest", "key", key, "err", err)
	})
	if err != nil {
		return n, err
	}
	for t, truth := range held {
		if _, err := h.d.Quota.ReconcileScope(ctx, t, quota.Storage, quota.ProgramKey(""), truth, time.Minute); err != nil {
			return n, err
		}
	}
	return n, nil
}

// publish carries the program's tenant as the event's tenant attribute: the
// jobs function acts for it when program.stored arrives through the Broker.
func (h *Handler) publish(typ string, p model.Program) {
	if err := h.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(p.Tenant)), typ, p.ID, p); err != nil {
		h.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// parseAddress accepts decimal or 0x-prefixed hex.
func parseAddress(s string) (*uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return nil, httpapi.BadRequest("load_address must be a 32-bit address, decimal or 0x-hex; got %q", s)
	}
	return &v, nil
}

// readUpload reads the multipart form: fields name, format, load_address and
// the part file. It streams, so an oversized file is refused as soon as it
// passes the limit.
func (h *Handler) readUpload(r *http.Request) (Upload, error) {
	var in Upload
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return in, httpapi.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"upload as multipart/form-data with fields file, name, format (elf|bin|hex) and optional load_address")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return in, httpapi.BadRequest("malformed multipart body: %v", err)
	}
	haveFile := false
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.As(err, new(*http.MaxBytesError)) {
				return in, tooLarge(h.d.MaxUpload)
			}
			return in, httpapi.BadRequest("malformed multipart body: %v", err)
		}
		if err := h.readPart(part, &in, &haveFile); err != nil {
			return in, err
		}
	}
	if !haveFile {
		return in, httpapi.BadRequest("multipart field file (the firmware image) is required")
	}
	return in, nil
}

func (h *Handler) readPart(part *multipart.Part, in *Upload, haveFile *bool) error {
	defer part.Close()
	field := part.FormName()
	limit := int64(4096)
	if field == "file" {
		limit = h.d.MaxUpload
	}
	b, err := io.ReadAll(io.LimitReader(part, limit+1))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return tooLarge(h.d.MaxUpload)
		}
		return httpapi.BadRequest("reading field %s: %v", field, err)
	}
	if int64(len(b)) > limit {
		if field == "file" {
			return tooLarge(h.d.MaxUpload)
		}
		return httpapi.BadRequest("field %s is longer than %d bytes", field, limit)
	}
	switch field {
	case "file":
		in.Data, *haveFile = b, true
		if in.Name == "" {
			in.Name = part.FileName()
		}
	case "name":
		in.Name = string(b)
	case "format":
		in.Format = strings.TrimSpace(string(b))
	case "load_address":
		a, err := parseAddress(string(b))
		if err != nil {
			return err
		}
		in.LoadAddress = a
	default:
		return httpapi.BadRequest("unknown multipart field %q; allowed: file, name, format, load_address", field)
	}
	return nil
}

// Routes are the REST API and the bucket notification webhook, each with
// the scope it needs.
func (h *Handler) Routes() []httpapi.Route {
	return []httpapi.Route{h.notificationRoute(),
		{Method: http.MethodPost, Pattern: "/api/v1/programs", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, h.d.MaxUpload+64<<10)
			in, err := h.readUpload(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			p, err := h.Store(r.Context(), in)
			httpapi.Created(w, r, p.ID, p, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/programs", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			pg, err := httpapi.ParsePage(r)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			l, err := h.List(r.Context(), pg)
			httpapi.Reply(w, r, http.StatusOK, l, err)
		}},
		{Method: http.MethodGet, Pattern: "/api/v1/programs/{id}", Scope: httpapi.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request) {
			p, err := h.Get(r.Context(), r.PathValue("id"))
			httpapi.Reply(w, r, http.StatusOK, p, err)
		}},
		{Method: http.MethodDelete, Pattern: "/api/v1/programs/{id}", Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			if _, err := h.Delete(r.Context(), r.PathValue("id")); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
	}
}

// Events returns the CloudEvents receiver for program commands.
func (h *Handler) Events(ctx context.Context) (http.Handler, error) {
	ops := map[string]cmdevent.Op{
		events.TypeProgramUpload: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.UploadProgram
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			if len(in.Content) == 0 {
				return cmdevent.Reply{}, httpapi.BadRequest("content (the base64 image) is required")
			}
			p, err := h.Store(ctx, Upload{Name: in.Name, Format: in.Format, LoadAddress: in.LoadAddress, Data: in.Content})
			return cmdevent.Reply{Type: events.TypeProgramStored, Subject: p.ID, Data: p}, err
		},
		events.TypeProgramDelete: func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			var in events.ProgramRef
			if err := cmdevent.Decode(e, &in); err != nil {
				return cmdevent.Reply{}, err
			}
			p, err := h.Delete(ctx, in.ProgramID)
			return cmdevent.Reply{Type: events.TypeProgramDeleted, Subject: p.ID, Data: p}, err
		},
	}
	h.s3Ops(ops)
	ce, err := cmdevent.Handler(ctx, h.source, ops, h.d.Log)
	if err != nil {
		return nil, err
	}
	// A request that is no CloudEvent at all is a store's webhook POST: the
	// in-cluster stores send bucket notifications to this root, which the
	// cluster ingress reaches without an API key (versitygw cannot send
	// one); outside callers use NotificationsPath with a credential.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ce-Specversion") == "" && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents") {
			h.serveNotification(w, r)
			return
		}
		ce.ServeHTTP(w, r)
	}), nil
}

// Health reports what the function is connected to.
func (h *Handler) Health(ctx context.Context) (map[string]any, error) {
	if err := h.d.State.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if err := h.d.Blobs.Ping(ctx); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return map[string]any{"status": "ok", "redis": h.d.State.Addr(), "blobs": h.d.Blobs.Name()}, nil
}
