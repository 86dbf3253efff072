package program

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
)

// Deps are the use cases' collaborators.
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

// Service runs the program use cases, for the programs function's REST and
// CloudEvents adapters.
type Service struct {
	d Deps
}

// New returns the service.
func New(d Deps) *Service {
	if d.MaxUpload <= 0 {
		d.MaxUpload = 16 << 20
	}
	return &Service{d: d}
}

// MaxUpload is the limit on an image's size in bytes, so adapters can stop
// reading an upload as soon as it passes.
func (svc *Service) MaxUpload() int64 { return svc.d.MaxUpload }

// Upload is one image to store.
type Upload struct {
	Name        string
	Format      string // empty: detected from content (ELF, HEX)
	LoadAddress *uint64
	Data        []byte
}

// List is one page of programs (GET /api/v1/programs).
type List struct {
	Programs []model.Program `json:"programs"`
	Total    int             `json:"total"`
	Page     int             `json:"page"`
	PageSize int             `json:"page_size"`
}

// TooLarge is the refusal of an image over max bytes.
func TooLarge(max int64) error {
	return fail.TooLarge("firmware image is larger than the limit of %d bytes", max)
}

// Store validates and stores an image: blob image, then manifest, then the
// index entry, so a crash leaves at worst an orphan image, never a program
// without its bytes.
func (svc *Service) Store(ctx context.Context, in Upload) (model.Program, error) {
	name := strings.TrimSpace(in.Name)
	if name == "" || len(name) > 128 || strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return model.Program{}, fail.Invalid("name is required: 1 to 128 printable characters")
	}
	if int64(len(in.Data)) > svc.d.MaxUpload {
		return model.Program{}, TooLarge(svc.d.MaxUpload)
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
	if err := svc.save(ctx, p, in.Data); err != nil {
		return model.Program{}, err
	}
	metrics.ProgramUploaded()
	svc.announce(ctx, p)
	return p, nil
}

// save writes the image (when there is one: a rejected program has none),
// then the manifest, then the index entry, so a crash leaves at worst an
// orphan image, never a manifest or an index entry without its bytes.
func (svc *Service) save(ctx context.Context, p model.Program, image []byte) (err error) {
	if image != nil {
		// The bytes are reserved before they are written, so concurrent
		// uploads cannot together pass the tenant's storage quota.
		if err := svc.d.Quota.Acquire(ctx, p.Tenant, quota.Storage, quota.ProgramKey(p.ID), int64(len(image))); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				svc.d.Quota.Release(context.WithoutCancel(ctx), p.Tenant, quota.Storage, quota.ProgramKey(p.ID))
			}
		}()
		if err := svc.d.Blobs.Put(ctx, model.ProgramImageKey(p.ID), bytes.NewReader(image), int64(len(image)), "application/octet-stream"); err != nil {
			return fmt.Errorf("store image: %w", err)
		}
	}
	manifest, _ := json.MarshalIndent(p, "", "  ")
	if err := svc.d.Blobs.Put(ctx, model.ProgramManifestKey(p.ID), bytes.NewReader(manifest), int64(len(manifest)), "application/json"); err != nil {
		if image != nil {
			svc.d.Blobs.Remove(context.WithoutCancel(ctx), model.ProgramImageKey(p.ID))
		}
		return fmt.Errorf("store manifest: %w", err)
	}
	return svc.d.State.PutProgram(ctx, p)
}

// announce publishes a new program (stored or rejected) and hands stored
// ones to OnStored.
func (svc *Service) announce(ctx context.Context, p model.Program) {
	if p.State == StateRejected {
		svc.publish(events.TypeProgramRejected, p)
		return
	}
	svc.publish(events.TypeProgramStored, p)
	if svc.d.OnStored != nil {
		svc.d.OnStored(context.WithoutCancel(ctx), p)
	}
}

// invalid turns a validation error into a domain error; anything else
// stays internal.
func invalid(err error) error {
	var fe *fwimage.Error
	if errors.As(err, &fe) {
		return fail.Unprocessable("%s", fe.Msg)
	}
	return err
}

// Get returns a program, or not found.
func (svc *Service) Get(ctx context.Context, id string) (model.Program, error) {
	return auth.Lookup(ctx, "program", id, svc.d.State.GetProgram, func(p model.Program) string { return p.Tenant })
}

// List returns one page of the caller's tenant's programs, oldest first.
func (svc *Service) List(ctx context.Context, page, size int) (List, error) {
	// The index is not per tenant, so the page is cut after filtering.
	all, _, err := svc.d.State.ListPrograms(ctx, 0, 1<<30)
	if err != nil {
		return List{}, err
	}
	ps := []model.Program{}
	for _, p := range all {
		if auth.Owns(ctx, p.Tenant) {
			ps = append(ps, p)
		}
	}
	if page < 1 || size < 1 {
		return List{}, fail.Invalid("page and page size must be at least 1; got page %d, size %d", page, size)
	}
	total := len(ps)
	off := (page - 1) * size
	ps = ps[min(off, total):min(off+size, total)]
	return List{Programs: ps, Total: total, Page: page, PageSize: size}, nil
}

// Delete removes a program that no session uses: index first (it disappears
// from the API), then manifest, then image.
func (svc *Service) Delete(ctx context.Context, id string) (model.Program, error) {
	p, err := svc.Get(ctx, id)
	if err != nil {
		return p, err
	}
	ss, _, err := svc.d.State.ListSessions(ctx, 0, 1<<30)
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
		return p, fail.Conflict("program %s is loaded in sessions %s; delete them or load another program first", id, strings.Join(users, ", "))
	}
	if err := svc.d.State.DeleteProgram(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return p, err
	}
	if p.SourceKey != "" {
		// Only if it still points here: a newer version may have replaced it.
		svc.d.State.UnsetProgramKey(ctx, p.SourceKey, id)
	}
	for _, k := range []string{model.ProgramManifestKey(id), model.ProgramImageKey(id)} {
		if err := svc.d.Blobs.Remove(ctx, k); err != nil {
			return p, fmt.Errorf("remove %s: %w", k, err)
		}
	}
	if err := svc.d.Quota.Release(ctx, model.TenantOr(p.Tenant), quota.Storage, quota.ProgramKey(id)); err != nil {
		svc.d.Log.Warn("release storage quota", "program", id, "err", err)
	}
	svc.publish(events.TypeProgramDeleted, p)
	return p, nil
}

// Reindex rebuilds the Redis index from the manifests in the blob store,
// and recounts each tenant's stored program bytes for the storage quota.
func (svc *Service) Reindex(ctx context.Context) (int, error) {
	n := 0
	held := quota.Holdings{}
	err := blob.Manifests(ctx, svc.d.Blobs, "programs/", func(v model.Program) error {
		if !model.ValidID(v.ID) {
			svc.d.Log.Warn("skipping program manifest without a valid id", "id", v.ID)
			return nil
		}
		n++
		if v.State != StateRejected {
			held.Add(model.TenantOr(v.Tenant), quota.ProgramKey(v.ID), v.Size)
		}
		if v.SourceKey != "" && v.State == StateStored {
			svc.reindexKey(ctx, v)
		}
		return svc.d.State.PutProgram(ctx, v)
	}, func(key string, err error) {
		svc.d.Log.Warn("skipping unreadable program manifest", "key", key, "err", err)
	})
	if err != nil {
		return n, err
	}
	return n, svc.d.Quota.ReconcileHoldings(ctx, quota.Storage, quota.ProgramKey(""), held, time.Minute)
}

// publish carries the program's tenant as the event's tenant attribute: the
// jobs function acts for it when program.stored arrives through the Broker.
func (svc *Service) publish(typ string, p model.Program) {
	if err := svc.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(p.Tenant)), typ, p.ID, p); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// Health reports what the function is connected to.
func (svc *Service) Health(ctx context.Context) (map[string]any, error) {
	if err := svc.d.State.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if err := svc.d.Blobs.Ping(ctx); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return map[string]any{"status": "ok", "redis": svc.d.State.Addr(), "blobs": svc.d.Blobs.Name()}, nil
}
