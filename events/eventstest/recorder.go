package eventstest

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Recorder is a CloudEvents sink: it accepts events in binary, structured
// and batched HTTP mode and keeps them in arrival order. The zero value is
// ready; serve it with httptest.NewServer.
type Recorder struct {
	mu     sync.Mutex
	events []cloudevents.Event
	// changed is closed and replaced whenever events arrive, waking Wait.
	changed chan struct{}
}

// ServeHTTP records the request's events and answers 202, or 400 for a
// request that is not a valid CloudEvent.
func (r *Recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a CloudEvent", http.StatusMethodNotAllowed)
		return
	}
	var evs []cloudevents.Event
	if cehttp.IsHTTPBatch(req.Header) {
		var err error
		if evs, err = cehttp.NewEventsFromHTTPRequest(req); err != nil {
			http.Error(w, "not a CloudEvents batch: "+err.Error(), http.StatusBadRequest)
			return
		}
	} else {
		e, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		evs = []cloudevents.Event{*e}
	}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			http.Error(w, "invalid CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	r.mu.Lock()
	r.events = append(r.events, evs...)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// Events returns the events recorded so far.
func (r *Recorder) Events() []cloudevents.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloudevents.Event(nil), r.events...)
}

// Wait returns once at least n events of eventType ("" for any type) have
// arrived, with all of them so far; or when ctx ends, with those that came
// and an error.
func (r *Recorder) Wait(ctx context.Context, eventType string, n int) ([]cloudevents.Event, error) {
	for {
		r.mu.Lock()
		var got []cloudevents.Event
		for _, e := range r.events {
			if eventType == "" || e.Type() == eventType {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			r.mu.Unlock()
			return got, nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return got, fmt.Errorf("waiting for %d events of type %q, got %d: %w", n, eventType, len(got), ctx.Err())
		}
	}
}
