package cmdevent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Reply is an operation's outcome as an event.
type Reply struct {
	Type    string
	Subject string
	Data    any
}

// Op handles one command event. Decode the payload with Decode.
type Op func(ctx context.Context, e cloudevents.Event) (Reply, error)

// MaxData bounds an event's data (program uploads carry the image).
const MaxData = 32 << 20

// Decode strictly decodes the event's JSON data into v.
func Decode(e cloudevents.Event, v any) error {
	if ct := e.DataContentType(); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return httpapi.BadRequest("event data must be application/json, got %q", ct)
	}
	return httpapi.DecodeBytes(e.Data(), v)
}

// Handler returns an http.Handler accepting CloudEvents for ops, in binary
// or structured mode. Each request is decoded on its own goroutine with its
// own context rather than through the SDK's receive handler, which hands
// messages over a shared channel and can run an event with another
// request's context (cloudevents/sdk-go#1224): that context carries the
// caller's tenant. The command acts as the authenticated caller, or, on the
// in-cluster ingress, as the tenant its extension attribute names.
func Handler(_ context.Context, source string, ops map[string]Op, log *slog.Logger) (http.Handler, error) {
	var types []string
	for t := range ops {
		types = append(types, t)
	}
	sort.Strings(types)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		r.Body = http.MaxBytesReader(w, r.Body, MaxData+64<<10)
		m := cehttp.NewMessageFromHttpRequest(r)
		defer m.Finish(nil)
		e, err := binding.ToEvent(ctx, m)
		if err == nil {
			err = e.Validate()
		}
		if err != nil {
			httpapi.WriteError(w, r, httpapi.BadRequest("not a valid CloudEvent (required attributes: specversion, id, source, type): %v", err))
			return
		}
		op, ok := ops[e.Type()]
		if !ok {
			httpapi.WriteError(w, r, httpapi.BadRequest("unknown event type %q; accepted: %s", e.Type(), strings.Join(types, ", ")))
			return
		}
		if len(e.Data()) > MaxData {
			httpapi.WriteError(w, r, httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "event data is larger than %d bytes", MaxData))
			return
		}
		if ctx, err = auth.EventContext(ctx, *e); err != nil {
			httpapi.WriteError(w, r, httpapi.BadRequest("%v", err))
			return
		}
		rep, err := op(ctx, *e)
		if err != nil {
			if httpapi.AsError(err) == nil {
				log.ErrorContext(ctx, "event failed", "type", e.Type(), "id", e.ID(), "err", err)
			}
			httpapi.WriteError(w, r, err)
			return
		}
		out, err := events.New(source, rep.Type, rep.Subject, rep.Data)
		if err != nil {
			httpapi.WriteError(w, r, fmt.Errorf("building reply: %w", err))
			return
		}
		// The reply may travel on through the Broker: it acts for the same
		// tenant as the command.
		out.SetExtension(events.TenantExtension, auth.Tenant(ctx))
		if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(&out), http.StatusOK, w); err != nil {
			log.WarnContext(ctx, "writing reply event", "type", rep.Type, "err", err)
		}
	}), nil
}
