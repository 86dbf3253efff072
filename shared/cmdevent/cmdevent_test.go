package cmdevent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/model"
)

// tenantEcho replies with a session whose name is the tenant the op ran as.
func tenantEcho(t *testing.T) http.Handler {
	t.Helper()
	h, err := Handler(context.Background(), "/test", map[string]Op{
		events.TypeSessionCreate: func(ctx context.Context, e cloudevents.Event) (Reply, error) {
			return Reply{Type: events.TypeSessionCreated, Subject: e.ID(), Data: model.Session{ID: e.ID(), Name: auth.Tenant(ctx)}}, nil
		},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func binary(id, tenant string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"name":"x"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("ce-specversion", "1.0")
	r.Header.Set("ce-source", "/test")
	r.Header.Set("ce-type", events.TypeSessionCreate)
	if id != "" {
		r.Header.Set("ce-id", id)
	}
	if tenant != "" {
		r.Header.Set("ce-tenant", tenant)
	}
	return r
}

func TestMissingAttributeIs400(t *testing.T) {
	w := httptest.NewRecorder()
	tenantEcho(t).ServeHTTP(w, binary("", ""))
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "required attributes") {
		t.Fatalf("event without id: %d %s", w.Code, w.Body.String())
	}
}

func TestBadTenantAttributeIs400(t *testing.T) {
	w := httptest.NewRecorder()
	tenantEcho(t).ServeHTTP(w, binary("1", "no spaces allowed"))
	if w.Code != http.StatusBadRequest {
		t.Fatalf("event with a malformed tenant: %d %s", w.Code, w.Body.String())
	}
}

// Concurrent events each run with their own request's tenant: the SDK's
// receive handler could hand one request's context to another's event.
func TestConcurrentEventsKeepTheirTenant(t *testing.T) {
	h := tenantEcho(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := fmt.Sprintf("t%d", i%7)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, binary(fmt.Sprint(i), tenant))
			if w.Code != http.StatusOK {
				errs <- fmt.Errorf("event %d: %d %s", i, w.Code, w.Body.String())
				return
			}
			if got := w.Body.String(); !strings.Contains(got, `"name":"`+tenant+`"`) || w.Header().Get("ce-subject") != fmt.Sprint(i) {
				errs <- fmt.Errorf("event %d of tenant %s answered %s %s", i, tenant, w.Header().Get("ce-subject"), got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
