package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// AppendFunc stores one event, as its structured-mode JSON, in the tenant's
// event stream (state.Store.AppendEvent).
type AppendFunc func(ctx context.Context, tenant string, event []byte) error

// eventPublisher is a Publisher that also takes a built event (Sink).
type eventPublisher interface {
	PublishEvent(ctx context.Context, e cloudevents.Event) error
}

// appendTimeout bounds one append, so a stuck Redis delays the queue only
// briefly.
const appendTimeout = 5 * time.Second

// Tee is the Publisher of every component: it forwards each event to the
// next publisher (the K_SINK sink, or Nop) and appends it to its tenant's
// event stream, which GET /api/v1/stream/events serves. Like Sink, Publish
// only queues: one worker appends in publishing order, and events that find
// the queue full are dropped and counted (the state they report stays
// readable through the API).
type Tee struct {
	next   Publisher
	source string
	append AppendFunc
	log    *slog.Logger

	mu     sync.RWMutex // guards closed against a send on the closed queue
	closed bool
	queue  chan teeEntry
	done   chan struct{}

	appended, failed, dropped atomic.Uint64
}

type teeEntry struct {
	tenant, typ string
	event       []byte
}

// NewTee returns a Tee for events from source. Call Close to append what
// is queued.
func NewTee(next Publisher, source string, app AppendFunc, log *slog.Logger) *Tee {
	return newTee(next, source, app, log, queueSize)
}

func newTee(next Publisher, source string, app AppendFunc, log *slog.Logger, size int) *Tee {
	if log == nil {
		log = slog.Default()
	}
	t := &Tee{next: next, source: source, append: app, log: log, queue: make(chan teeEntry, size), done: make(chan struct{})}
	go t.run()
	return t
}

// Publish builds the event once, hands it to the next publisher and queues
// it for the stream. An event without a tenant (WithTenant) goes to no
// tenant's stream: it is forwarded, and the omission logged, rather than
// shown to a tenant it may not belong to.
func (t *Tee) Publish(ctx context.Context, eventType, subject string, data any) error {
	e, err := New(t.source, eventType, subject, data)
	if err != nil {
		return err
	}
	tenant := TenantOf(ctx)
	if tenant != "" {
		e.SetExtension(TenantExtension, tenant)
	}
	var ferr error
	if ep, ok := t.next.(eventPublisher); ok {
		ferr = ep.PublishEvent(ctx, e)
	} else {
		ferr = t.next.Publish(ctx, eventType, subject, data)
	}
	if tenant == "" {
		t.log.ErrorContext(ctx, "event published without a tenant (events.WithTenant); it is in no tenant's event stream", "type", eventType, "subject", subject)
		return ferr
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("events: encode %s: %w", eventType, err)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return ErrClosed
	}
	select {
	case t.queue <- teeEntry{tenant: tenant, typ: eventType, event: b}:
	default:
		n := t.dropped.Add(1)
		t.log.WarnContext(ctx, "event stream queue full, event not appended", "type", eventType, "subject", subject, "dropped", n)
	}
	return ferr
}

func (t *Tee) run() {
	defer close(t.done)
	for q := range t.queue {
		ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
		err := t.append(ctx, q.tenant, q.event)
		cancel()
		if err != nil {
			t.failed.Add(1)
			t.log.Warn("event not appended to the event stream", "type", q.typ, "tenant", q.tenant, "err", err)
			continue
		}
		t.appended.Add(1)
	}
}

// Close stops accepting events and waits until the queued ones are
// appended or ctx ends.
func (t *Tee) Close(ctx context.Context) error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.queue)
	}
	t.mu.Unlock()
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("events: event stream queue not drained: %w", ctx.Err())
	}
}

// Stats counts events appended, failed to append, and dropped (queue full).
func (t *Tee) Stats() (appended, failed, dropped uint64) {
	return t.appended.Load(), t.failed.Load(), t.dropped.Load()
}
