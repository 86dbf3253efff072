package cmdevent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/model"
)

// FuzzCommandEvent posts arbitrary structured-mode CloudEvents to a receiver
// whose ops decode every command payload of the catalog: whatever the bytes,
// the answer is a reply or a 4xx, never a panic or a 5xx.
func FuzzCommandEvent(f *testing.F) {
	ops := map[string]Op{}
	for _, s := range events.Catalog {
		if s.Direction != events.Command {
			continue
		}
		ops[s.Type] = func(ctx context.Context, e cloudevents.Event) (Reply, error) {
			v := s.NewPayload()
			if err := Decode(e, v); err != nil {
				return Reply{}, err
			}
			return Reply{Type: events.TypeSessionCreated, Subject: "0123456789abcdef", Data: model.Session{ID: "0123456789abcdef"}}, nil
		}
		if sample, err := events.Sample(s.Type); err == nil {
			f.Add(sample)
		}
	}
	for _, s := range []string{
		`{"specversion":"1.0","id":"1","source":"/x","type":"io.machineserver.session.create.v1","data":{"name":"a"}}`,
		`{"specversion":"1.0","id":"1","source":"/x","type":"io.machineserver.session.create.v1","tenant":7,"data":{}}`,
		`{"specversion":"1.0","id":"","source":"","type":""}`,
		`{"specversion":"0.3","id":"1","source":"/x","type":"t","datacontenttype":"text/plain","data":"x"}`,
		`{"specversion":"1.0","id":"1","source":"/x","type":"io.machineserver.program.upload.v1","data_base64":"AAAA"}`,
		`not json`, ``,
	} {
		f.Add([]byte(s))
	}
	h, err := Handler(context.Background(), "/test", ops, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.String())
		}
	})
}
