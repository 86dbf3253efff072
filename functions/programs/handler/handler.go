package handler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/programs/program"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Deps are the program use cases' collaborators (program.Deps).
type Deps = program.Deps

// The use cases' inputs and answers, and the bucket trigger's types.
type (
	Upload      = program.Upload
	List        = program.List
	Watch       = program.Watch
	WatchConfig = program.WatchConfig
	Notified    = program.Notified
	Ignored     = program.Ignored
)

// Handler is the programs function's REST and CloudEvents adapter over the
// program use cases (program.Service, embedded: its operations are the
// handler's).
type Handler struct {
	*program.Service
	log    *slog.Logger
	source string
}

// New returns the handler.
func New(d Deps) *Handler {
	return &Handler{Service: program.New(d), log: d.Log, source: events.Source("programs")}
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
				return in, program.TooLarge(h.MaxUpload())
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
		limit = h.MaxUpload()
	}
	b, err := io.ReadAll(io.LimitReader(part, limit+1))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return program.TooLarge(h.MaxUpload())
		}
		return httpapi.BadRequest("reading field %s: %v", field, err)
	}
	if int64(len(b)) > limit {
		if field == "file" {
			return program.TooLarge(h.MaxUpload())
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
			r.Body = http.MaxBytesReader(w, r.Body, h.MaxUpload()+64<<10)
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
			l, err := h.List(r.Context(), pg.Page, pg.Size)
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
	ce, err := cmdevent.Handler(ctx, h.source, ops, h.log)
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
