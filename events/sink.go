package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/machineserver/machineserver/shared/metrics"
)

const (
	queueSize = 1024
	// attempts and firstBackoff keep a failing event's retries within about
	// a second, so one bad spell of the sink delays the queue only briefly.
	attempts     = 4
	firstBackoff = 100 * time.Millisecond
	sendTimeout  = 10 * time.Second
)

// Sink publishes events to a CloudEvents HTTP endpoint (K_SINK) in binary
// mode. Publish only enqueues, so a request never waits on the sink; one
// worker delivers in order, retrying transient failures. Events that find
// the queue full are dropped and counted: notifications are best effort,
// and the state they report stays readable through the API.
type Sink struct {
	client  cloudevents.Client
	source  string
	log     *slog.Logger
	backoff time.Duration

	mu     sync.RWMutex // guards closed against a send on the closed queue
	closed bool
	queue  chan cloudevents.Event

	// ctx aborts delivery when Close runs out of time.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	sent, failed, dropped atomic.Uint64
}

// NewSink returns a Sink that sends events from source to sinkURL. Call
// Close to deliver what is queued.
func NewSink(sinkURL, source string, log *slog.Logger) (*Sink, error) {
	return newSink(sinkURL, source, log, queueSize, firstBackoff)
}

func newSink(sinkURL, source string, log *slog.Logger, size int, backoff time.Duration) (*Sink, error) {
	u, err := url.Parse(sinkURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("events: sink URL %q is not an absolute http(s) URL", sinkURL)
	}
	p, err := cehttp.New(cehttp.WithTarget(sinkURL))
	if err != nil {
		return nil, fmt.Errorf("events: sink protocol: %w", err)
	}
	c, err := cloudevents.NewClient(p)
	if err != nil {
		return nil, fmt.Errorf("events: sink client: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sink{
		client: c, source: source, log: log.With("sink", sinkURL), backoff: backoff,
		queue: make(chan cloudevents.Event, size),
		ctx:   ctx, cancel: cancel, done: make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// Publish builds the event and queues it. It returns an error only for an
// event that cannot be built or after Close; a full queue drops the event
// (see Stats). ctx carries the event's tenant (WithTenant) and is used for
// logging; its end does not stop delivery, which outlives the request.
func (s *Sink) Publish(ctx context.Context, eventType, subject string, data any) error {
	e, err := New(s.source, eventType, subject, data)
	if err != nil {
		return err
	}
	if t := TenantOf(ctx); t != "" {
		e.SetExtension(TenantExtension, t)
	}
	return s.PublishEvent(ctx, e)
}

// PublishEvent queues an event built elsewhere (a Tee builds each event
// once, so the sink and the event stream carry the same id), as Publish
// does.
func (s *Sink) PublishEvent(ctx context.Context, e cloudevents.Event) error {
	eventType, subject := e.Type(), e.Subject()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.queue <- e:
	default:
		n := s.dropped.Add(1)
		metrics.EventPublished(eventType, "dropped")
		s.log.WarnContext(ctx, "event queue full, event dropped", "type", eventType, "subject", subject, "dropped", n)
	}
	return nil
}

// Close stops accepting events and waits until the queued ones are delivered
// or ctx ends; then delivery is aborted and the rest counted as dropped.
func (s *Sink) Close(ctx context.Context) error {
	defer s.cancel()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	<-s.done
	sent, failed, dropped := s.Stats()
	s.log.Warn("event sink closed before its queue drained", "sent", sent, "failed", failed, "dropped", dropped)
	return fmt.Errorf("events: sink closed before its queue drained: %w", ctx.Err())
}

// Stats counts events delivered, given up after retries, and dropped
// (queue full, or still queued when Close gave up).
func (s *Sink) Stats() (sent, failed, dropped uint64) {
	return s.sent.Load(), s.failed.Load(), s.dropped.Load()
}

func (s *Sink) run() {
	defer close(s.done)
	for e := range s.queue {
		if s.ctx.Err() != nil {
			s.dropped.Add(1)
			metrics.EventPublished(e.Type(), "dropped")
			continue
		}
		if err := s.deliver(e); err != nil {
			s.failed.Add(1)
			metrics.EventPublished(e.Type(), "failed")
			s.log.Warn("event not delivered", "type", e.Type(), "id", e.ID(), "subject", e.Subject(), "err", err)
			continue
		}
		s.sent.Add(1)
		metrics.EventPublished(e.Type(), "sent")
	}
}

func (s *Sink) deliver(e cloudevents.Event) error {
	ctx := cloudevents.WithEncodingBinary(s.ctx)
	wait := s.backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, sendTimeout)
		res := s.client.Send(actx, e)
		cancel()
		if cloudevents.IsACK(res) {
			return nil
		}
		if attempt == attempts || !retriable(res) {
			return fmt.Errorf("attempt %d: %w", attempt, res)
		}
		select {
		case <-s.ctx.Done():
			return fmt.Errorf("attempt %d: %w (sink closing)", attempt, res)
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// retriable reports whether a failed send may succeed later: the sink was
// unreachable, overloaded or broken, as opposed to rejecting the event.
func retriable(res error) bool {
	var r *cehttp.Result
	if errors.As(res, &r) {
		return r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusRequestTimeout
	}
	return true
}
