package events

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events/eventstest"
)

// appended records what a Tee appends, by tenant.
type appended struct {
	mu sync.Mutex
	by map[string][]cloudevents.Event
}

func (a *appended) append(_ context.Context, tenant string, b []byte) error {
	var e cloudevents.Event
	if err := json.Unmarshal(b, &e); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.by[tenant] = append(a.by[tenant], e)
	return nil
}

func TestTeeAppendsPerTenantAndForwardsTheSameEvent(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	sink, err := NewSink(srv.URL, SourceSessions, quiet)
	if err != nil {
		t.Fatal(err)
	}
	app := &appended{by: map[string][]cloudevents.Event{}}
	tee := NewTee(sink, SourceSessions, app.append, quiet)
	ctx := context.Background()
	for _, c := range []struct{ tenant, id string }{{"acme", "a1"}, {"default", "d1"}, {"acme", "a2"}, {"", "none"}} {
		pctx := ctx
		if c.tenant != "" {
			pctx = WithTenant(ctx, c.tenant)
		}
		if err := tee.Publish(pctx, TypeSessionStarted, c.id, session(c.id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tee.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The stream of each tenant has its events, in order, with the tenant
	// attribute; the event without a tenant is in none.
	for tenant, want := range map[string][]string{"acme": {"a1", "a2"}, "default": {"d1"}} {
		got := app.by[tenant]
		if len(got) != len(want) {
			t.Fatalf("%s: %d events appended, want %v", tenant, len(got), want)
		}
		for i, e := range got {
			if e.Subject() != want[i] || e.Extensions()[TenantExtension] != tenant || e.Source() != SourceSessions {
				t.Errorf("%s: event %d: subject %q, tenant %v, source %q", tenant, i, e.Subject(), e.Extensions()[TenantExtension], e.Source())
			}
		}
	}
	if len(app.by) != 2 {
		t.Errorf("appended to %d tenants' streams, want 2: %v", len(app.by), app.by)
	}
	// The sink got all four, each with the id the stream has.
	ids := map[string]string{}
	for _, es := range app.by {
		for _, e := range es {
			ids[e.Subject()] = e.ID()
		}
	}
	sent := rec.Events()
	if len(sent) != 4 {
		t.Fatalf("sink got %d events, want 4", len(sent))
	}
	for _, e := range sent {
		if id, ok := ids[e.Subject()]; ok && id != e.ID() {
			t.Errorf("%s: sink id %s, stream id %s", e.Subject(), e.ID(), id)
		}
	}
	if a, f, d := tee.Stats(); a != 3 || f != 0 || d != 0 {
		t.Errorf("stats appended %d failed %d dropped %d", a, f, d)
	}
	if err := tee.Publish(WithTenant(ctx, "acme"), TypeSessionStarted, "late", session("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: %v", err)
	}
}

// A stuck stream store never holds Publish up: what does not fit the queue
// is dropped and counted, and a failing append is counted.
func TestTeeNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	stuck := func(ctx context.Context, _ string, _ []byte) error {
		<-release
		return errors.New("redis is down")
	}
	tee := newTee(Nop, SourceSessions, stuck, quiet, 1)
	ctx := WithTenant(context.Background(), "acme")
	for i := range 3 {
		if err := tee.Publish(ctx, TypeSessionStarted, "s", session(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tee.Close(cctx); err != nil {
		t.Fatal(err)
	}
	a, f, d := tee.Stats()
	if a != 0 || d < 1 || f+d != 3 {
		t.Errorf("stats appended %d failed %d dropped %d; want every event failed or dropped, at least one dropped", a, f, d)
	}
	if err := tee.Publish(ctx, TypeSessionStarted, "s", CoverageReport{}); err == nil {
		t.Error("a payload of the wrong type was published")
	}
}
