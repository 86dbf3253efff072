package cmdevent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/machineserver/machineserver/events"
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

// Handler returns an http.Handler accepting CloudEvents for ops.
func Handler(ctx context.Context, source string, ops map[string]Op, log *slog.Logger) (http.Handler, error) {
	p, err := cloudevents.NewHTTP()
	if err != nil {
		return nil, err
	}
	var types []string
	for t := range ops {
		types = append(types, t)
	}
	sort.Strings(types)
	fn := func(ctx context.Context, e cloudevents.Event) (*cloudevents.Event, protocol.Result) {
		op, ok := ops[e.Type()]
		if !ok {
			return nil, cehttp.NewResult(http.StatusBadRequest, "unknown event type %q; accepted: %s", e.Type(), strings.Join(types, ", "))
		}
		if len(e.Data()) > MaxData {
			return nil, cehttp.NewResult(http.StatusRequestEntityTooLarge, "event data is larger than %d bytes", MaxData)
		}
		rep, err := op(ctx, e)
		if err != nil {
			var he *httpapi.Error
			if errors.As(err, &he) {
				return nil, cehttp.NewResult(he.Status, "%s", he.Message)
			}
			log.ErrorContext(ctx, "event failed", "type", e.Type(), "id", e.ID(), "err", err)
			return nil, cehttp.NewResult(http.StatusInternalServerError, "internal error")
		}
		out, err := events.New(source, rep.Type, rep.Subject, rep.Data)
		if err != nil {
			return nil, cehttp.NewResult(http.StatusInternalServerError, "building reply: %v", err)
		}
		return &out, cehttp.NewResult(http.StatusOK, "")
	}
	return cloudevents.NewHTTPReceiveHandler(ctx, p, fn)
}
