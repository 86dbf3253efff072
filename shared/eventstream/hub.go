package eventstream

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/machineserver/machineserver/shared/state"
)

const (
	// readBatch bounds the entries one read takes per tenant.
	readBatch = 256
	// follow is how long one read waits for new entries. A tenant whose
	// first client arrives while a read waits is followed from the next
	// one, from the position that client fixed, so this delays its first
	// events by up to this much but never loses one.
	follow = 200 * time.Millisecond
	// backlog is how many events a client may be behind the live stream
	// before it is cut off (it resumes from its last streamid).
	backlog = 1024
)

// hub follows the streams of the tenants that have clients in this
// process, with one blocking read for all of them, and hands each entry to
// the tenant's clients. It runs while there are clients.
type hub struct {
	st  *state.Store
	log *slog.Logger

	mu      sync.Mutex
	feeds   map[string]*feed
	running bool
}

// feed is one tenant's followed stream: pos is the last entry read.
type feed struct {
	pos  streamID
	subs map[*sub]struct{}
}

// sub is one client's subscription: live entries arrive on ch, in stream
// order; lost is closed when the client fell backlog entries behind.
type sub struct {
	tenant   string
	ch       chan *item
	lost     chan struct{}
	lostOnce sync.Once
}

func newHub(st *state.Store, log *slog.Logger) *hub {
	return &hub{st: st, log: log, feeds: map[string]*feed{}}
}

// subscribe registers a client of tenant that has every entry up to from.
// It returns the position up to which the client must read the stream
// itself (from, exclusive, to upto, inclusive): what the hub hands it later
// comes after upto.
func (h *hub) subscribe(tenant string, from streamID) (s *sub, upto streamID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[tenant]
	if f == nil {
		f = &feed{pos: from, subs: map[*sub]struct{}{}}
		h.feeds[tenant] = f
	}
	s = &sub{tenant: tenant, ch: make(chan *item, backlog), lost: make(chan struct{})}
	f.subs[s] = struct{}{}
	if !h.running {
		h.running = true
		go h.run()
	}
	return s, f.pos
}

func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[s.tenant]
	if f == nil {
		return
	}
	delete(f.subs, s)
	if len(f.subs) == 0 {
		delete(h.feeds, s.tenant)
	}
}

func (h *hub) run() {
	failing := false
	for {
		h.mu.Lock()
		if len(h.feeds) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		from := make(map[string]string, len(h.feeds))
		for t, f := range h.feeds {
			from[t] = f.pos.String()
		}
		h.mu.Unlock()

		got, err := h.st.ReadEvents(context.Background(), from, readBatch, follow)
		if err != nil {
			// Clients keep their connections and get what they missed once
			// Redis answers again; the log says so once per outage.
			if !failing {
				h.log.Warn("event stream: reading Redis failed; retrying", "err", err)
				failing = true
			}
			time.Sleep(time.Second)
			continue
		}
		if failing {
			h.log.Info("event stream: reading Redis again")
			failing = false
		}
		h.dispatch(from, got)
	}
}

// dispatch hands what a read got to the clients. A feed that was dropped
// and started again meanwhile (its position changed) is skipped: the next
// read takes it from its new position.
func (h *hub) dispatch(from map[string]string, got map[string][]state.StreamEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for tenant, entries := range got {
		f := h.feeds[tenant]
		if f == nil || f.pos.String() != from[tenant] {
			continue
		}
		for _, e := range entries {
			it, err := parseItem(e.ID, e.Event)
			if err != nil {
				h.log.Warn("event stream: skipping an entry", "tenant", tenant, "err", err)
				if id, err := parseID(e.ID); err == nil {
					f.pos = id
				}
				continue
			}
			f.pos = it.id
			for s := range f.subs {
				s.offer(it)
			}
		}
	}
}

// offer never blocks the hub: a client that cannot keep up is cut off.
func (s *sub) offer(it *item) {
	select {
	case s.ch <- it:
	default:
		s.lostOnce.Do(func() { close(s.lost) })
	}
}
