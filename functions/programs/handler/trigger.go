package handler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/programs/program"
	"github.com/machineserver/machineserver/shared/cmdevent"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// NotificationsPath is where S3-compatible stores POST bucket notifications
// (versitygw's --event-webhook-url, a MinIO webhook target) through the API;
// it needs no credential, because stores cannot send one (see shared/auth).
// In a cluster the stores POST to the function's root
// instead (POST / without CloudEvents headers), which the in-cluster
// ingress reaches without one.
const NotificationsPath = "/api/v1/programs/notifications"

// notificationRoute is the webhook. Its write scope applies to callers
// that send a credential; a store that sends none is let through by the
// authenticator, and the handler then asks for the webhook token.
func (h *Handler) notificationRoute() httpapi.Route {
	return httpapi.Route{Method: http.MethodPost, Pattern: NotificationsPath, Scope: httpapi.ScopeWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
		if !h.WebhookAllowed(r.Context(), r.URL.Query().Get("token")) {
			w.Header().Set("WWW-Authenticate", `ApiKey realm="machineserver"`)
			httpapi.WriteError(w, r, httpapi.Errorf(http.StatusUnauthorized, "unauthorized",
				"bucket notifications need the webhook token as ?token= (MS_PROGRAMS_WEBHOOK_TOKEN, in the store's webhook URL) or an API key with the write scope"))
			return
		}
		h.serveNotification(w, r)
	}}
}

// serveNotification handles a webhook body; the in-cluster root ingress
// calls it directly, the public path after WebhookAllowed.
func (h *Handler) serveNotification(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "a notification is at most 1 MiB"))
		return
	}
	n, err := h.Notify(r.Context(), body)
	httpapi.Reply(w, r, http.StatusOK, n, err)
}

// s3Ops are the CloudEvents receivers of bucket notifications in their
// CloudEvents form (AWS S3 adapter spec: data is one record).
func (h *Handler) s3Ops(ops map[string]cmdevent.Op) {
	for _, typ := range events.S3ObjectCreatedTypes {
		ops[typ] = func(ctx context.Context, e cloudevents.Event) (cmdevent.Reply, error) {
			if ct := e.DataContentType(); ct != "" && !strings.HasPrefix(ct, "application/json") {
				return cmdevent.Reply{}, httpapi.BadRequest("event data must be application/json, got %q", ct)
			}
			var rec events.S3Record
			if err := json.Unmarshal(e.Data(), &rec); err != nil {
				return cmdevent.Reply{}, httpapi.BadRequest("event data is not an S3 event record: %v", err)
			}
			if rec.EventName == "" {
				rec.EventName = strings.TrimPrefix(e.Type(), "com.amazonaws.s3.")
			}
			p, ign, err := h.Register(ctx, rec)
			if err != nil {
				return cmdevent.Reply{}, err
			}
			if ign != nil {
				// Not retried: nothing about this record will change.
				return cmdevent.Reply{}, httpapi.Unprocessable("%s/%s not registered: %s", ign.Bucket, ign.Key, ign.Reason)
			}
			typ := events.TypeProgramStored
			if p.State == program.StateRejected {
				typ = events.TypeProgramRejected
			}
			return cmdevent.Reply{Type: typ, Subject: p.ID, Data: p}, nil
		}
	}
}
