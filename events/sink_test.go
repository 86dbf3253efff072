package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events/eventstest"
	"github.com/machineserver/machineserver/shared/model"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func session(id string) model.Session {
	return model.Session{ID: id, Name: "s", Backend: "qemu", Machine: "netduino2", State: model.StateRunning}
}

func subjects(t *testing.T, rec *eventstest.Recorder) []string {
	t.Helper()
	var out []string
	for _, e := range rec.Events() {
		out = append(out, e.Subject())
	}
	return out
}

func publishN(t *testing.T, s *Sink, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Publish(t.Context(), TypeSessionStarted, fmt.Sprint(i), session(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
}

func checkStats(t *testing.T, s *Sink, sent, failed, dropped uint64) {
	t.Helper()
	if a, b, c := s.Stats(); a != sent || b != failed || c != dropped {
		t.Errorf("stats sent %d failed %d dropped %d, want %d %d %d", a, b, c, sent, failed, dropped)
	}
}

func TestSinkDeliversInBinaryModeAndCloseDrains(t *testing.T) {
	rec := &eventstest.Recorder{}
	var nonBinary atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ce-Specversion") != "1.0" || r.Header.Get("Content-Type") != "application/json" {
			nonBinary.Add(1)
		}
		rec.ServeHTTP(w, r)
	}))
	defer srv.Close()
	s, err := NewSink(srv.URL, RunnerSource("runner-0"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	publishN(t, s, 0, n)
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := rec.Events()
	if len(got) != n {
		t.Fatalf("sink got %d events, want %d", len(got), n)
	}
	for i, e := range got {
		var d model.Session
		if e.Subject() != fmt.Sprint(i) || e.Type() != TypeSessionStarted || e.Source() != "/machineserver/runner/runner-0" || e.DataAs(&d) != nil || d.ID != e.Subject() {
			t.Errorf("event %d out of order or wrong: %v", i, e)
		}
	}
	if nonBinary.Load() != 0 {
		t.Errorf("%d requests were not in binary mode", nonBinary.Load())
	}
	checkStats(t, s, n, 0, 0)
	if err := s.Publish(t.Context(), TypeSessionStarted, "x", session("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// failing answers status to the first fail requests, then passes to next.
func failing(status, fail int, next http.Handler) (http.Handler, *atomic.Int32) {
	var calls atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if int(calls.Add(1)) <= fail {
			http.Error(w, "not now", status)
			return
		}
		next.ServeHTTP(w, r)
	}), &calls
}

func TestSinkRetries(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status, fail int
		calls        int32
		sent, failed uint64
	}{
		{"5xx then success", http.StatusServiceUnavailable, 2, 3, 1, 0},
		{"429 then success", http.StatusTooManyRequests, 1, 2, 1, 0},
		{"5xx for good", http.StatusBadGateway, 100, attempts, 0, 1},
		{"4xx is not retried", http.StatusBadRequest, 100, 1, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &eventstest.Recorder{}
			h, calls := failing(tc.status, tc.fail, rec)
			srv := httptest.NewServer(h)
			defer srv.Close()
			s, err := newSink(srv.URL, SourceSessions, quiet, 8, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			publishN(t, s, 0, 1)
			if err := s.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			if calls.Load() != tc.calls || len(rec.Events()) != int(tc.sent) {
				t.Errorf("%d requests, %d recorded; want %d, %d", calls.Load(), len(rec.Events()), tc.calls, tc.sent)
			}
			checkStats(t, s, tc.sent, tc.failed, 0)
		})
	}
}

func TestSinkRetriesUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	s, err := newSink(url, SourceSessions, quiet, 8, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, s, 0, 2)
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, 0, 2, 0)
}

// blocked is a sink that holds every request until release is closed (or
// the client gives up), announcing each arrival.
type blocked struct {
	arrived chan struct{}
	release chan struct{}
	next    http.Handler
	once    sync.Once
}

func newBlocked(next http.Handler) *blocked {
	return &blocked{arrived: make(chan struct{}, 100), release: make(chan struct{}), next: next}
}

func (b *blocked) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.arrived <- struct{}{}
	select {
	case <-b.release:
		b.next.ServeHTTP(w, r)
	case <-r.Context().Done():
	}
}

func (b *blocked) open() { b.once.Do(func() { close(b.release) }) }

func TestSinkDropsWhenFull(t *testing.T) {
	rec := &eventstest.Recorder{}
	b := newBlocked(rec)
	srv := httptest.NewServer(b)
	defer srv.Close()
	defer b.open()
	s, err := newSink(srv.URL, SourceSessions, quiet, 2, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, s, 0, 1)
	<-b.arrived // the worker holds event 0, the queue is empty
	publishN(t, s, 1, 5)
	checkStats(t, s, 0, 0, 2) // 1 and 2 queued, 3 and 4 dropped
	b.open()
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, 3, 0, 2)
	if got := fmt.Sprint(subjects(t, rec)); got != "[0 1 2]" {
		t.Errorf("delivered %s, want [0 1 2]", got)
	}
}

func TestSinkCloseGivesUpWhenCtxEnds(t *testing.T) {
	b := newBlocked(&eventstest.Recorder{})
	srv := httptest.NewServer(b)
	defer srv.Close()
	defer b.open()
	s, err := newSink(srv.URL, SourceSessions, quiet, 8, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, s, 0, 3)
	<-b.arrived
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	checkStats(t, s, 0, 1, 2) // the one in flight failed, the queued ones dropped
}

func TestPublishRefusesWrongPayload(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	s, err := NewSink(srv.URL, SourcePrograms, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(t.Context(), TypeProgramStored, "x", session("x")); err == nil {
		t.Error("a Session was published as program.stored")
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkStats(t, s, 0, 0, 0)
}

func TestNewSinkRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "broker.default.svc", "ftp://x/", "http://", "://"} {
		if _, err := NewSink(u, SourceSessions, quiet); err == nil {
			t.Errorf("NewSink(%q) succeeded", u)
		}
	}
}

func TestNop(t *testing.T) {
	if err := Nop.Publish(t.Context(), TypeSessionStarted, "x", session("x")); err != nil {
		t.Fatal(err)
	}
}

// TestSinkAccountsForEveryEvent publishes from many goroutines while Close
// runs: every event is refused with ErrClosed or counted exactly once.
func TestSinkAccountsForEveryEvent(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	s, err := newSink(srv.URL, SourceSessions, quiet, 16, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 100
	var refused atomic.Uint64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprint(w, "-", i)
				err := s.Publish(t.Context(), TypeSessionStarted, id, session(id))
				switch {
				case errors.Is(err, ErrClosed):
					refused.Add(1)
				case err != nil:
					t.Error(err)
				}
			}
		})
	}
	closeErr := s.Close(t.Context())
	wg.Wait()
	if closeErr != nil {
		t.Fatal(closeErr)
	}
	sent, failed, dropped := s.Stats()
	if total := sent + failed + dropped + refused.Load(); total != workers*each || failed != 0 {
		t.Errorf("sent %d + failed %d + dropped %d + refused %d != %d", sent, failed, dropped, refused.Load(), workers*each)
	}
	if uint64(len(rec.Events())) != sent {
		t.Errorf("recorder has %d events, sink says %d sent", len(rec.Events()), sent)
	}
}
