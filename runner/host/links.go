package host

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// Links join ports of two sessions on this runner (the runner side of a
// system of linked boards). A link is defined once and outlives the
// machines: whenever both ends' machines run it is attached, a link.UART
// carrying their bytes, and a machine's end detaches it until the pair
// runs again. The pump stays the only reader of a port (its ring keeps
// the port's history, linked or not) and tees what it reads to the link
// through an in-memory pipe; a second pipe's output is written to the
// machine. Links live in the runner's memory: a restarted runner has none
// until they are put again.

// livePort is a running machine's port as a link sees it.
type livePort struct {
	conn net.Conn

	mu     sync.Mutex
	tap    net.Conn // the runner's end of the link's pipe; nil when unlinked
	closed bool     // the machine is gone
}

// feed hands what the pump read to the link, if there is one; the write
// blocks while the link holds back (a receiver that does not take bytes
// holds the sender back, as between two sockets).
func (lp *livePort) feed(b []byte) {
	lp.mu.Lock()
	t := lp.tap
	lp.mu.Unlock()
	if t != nil {
		t.Write(b) // fails only once the link is gone, which detaches it
	}
}

// linked says whether a link takes the port's bytes: the pump then hands
// them on as they come instead of gathering a stream (a peer machine
// waits for each message's last byte).
func (lp *livePort) linked() bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.tap != nil
}

// setTap links the port, unless it is linked already or gone.
func (lp *livePort) setTap(t net.Conn) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.closed || lp.tap != nil {
		return false
	}
	lp.tap = t
	return true
}

func (lp *livePort) clearTap(t net.Conn) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.tap == t {
		lp.tap = nil
	}
}

// close marks the machine gone and ends its link's side.
func (lp *livePort) close() {
	lp.mu.Lock()
	t := lp.tap
	lp.closed, lp.tap = true, nil
	lp.mu.Unlock()
	if t != nil {
		t.Close()
	}
}

// hostLink is one link's definition and its current attachment.
type hostLink struct {
	id  string
	req runnerapi.LinkRequest

	mu          sync.Mutex
	faults      link.Faults
	cur         *link.UART
	last        *link.UART // the latest attachment, for its capture
	attachments int
	base        [2]runnerapi.LinkDirection // counters of ended attachments
	// Every attachment's capture numbers its records from 1: the link
	// numbers them on across attachments, a record's number being its
	// attachment's lastBase (for last) plus its own. seqBase is how many
	// records the ended attachments made.
	seqBase, lastBase uint64
	// changed is closed, and replaced, when an attachment begins or the
	// link is deleted: what a stream waits for between attachments.
	changed chan struct{}
	deleted bool
}

// linkFaults validates the wire form by the rule the systems API applies
// (model.LinkFaults.Check, so the runner and the API cannot disagree on
// what a link accepts) and converts it to the link's form.
func linkFaults(f runnerapi.LinkFaults) (link.Faults, error) {
	d, err := f.Check()
	if err != nil {
		return link.Faults{}, httpapi.BadRequest("%v", err)
	}
	return link.Faults{Down: f.Down, Loss: f.Loss, Corrupt: f.Corrupt, Delay: d}, nil
}

// PutLink defines a link between two ports of sessions on this runner and
// attaches it if both machines run. Putting the same link again is
// harmless; another link under its id, or a port linked already, is a 409.
func (r *Runner) PutLink(id string, req runnerapi.LinkRequest) (runnerapi.Link, error) {
	if !model.ValidID(id) {
		return runnerapi.Link{}, httpapi.BadRequest("link id %q is not 16 lowercase hex digits", id)
	}
	f, err := linkFaults(req.Faults)
	if err != nil {
		return runnerapi.Link{}, err
	}
	for i, e := range req.Ends {
		if e.Port == "" {
			e.Port = consolePort
			req.Ends[i] = e
		}
		s, err := r.slot(e.Session, false)
		if err != nil {
			return runnerapi.Link{}, httpapi.Unprocessable("end %d: session %s has no emulator slot on runner %s (power it on first)", i+1, e.Session, r.cfg.ID)
		}
		if _, err := s.ports.lookup(e.Session, e.Port); err != nil {
			return runnerapi.Link{}, err
		}
	}
	if req.Ends[0] == req.Ends[1] {
		return runnerapi.Link{}, httpapi.BadRequest("both ends are %s; a link joins two ports", req.Ends[0])
	}
	r.mu.Lock()
	if r.links == nil {
		r.links = map[string]*hostLink{}
	}
	if h, ok := r.links[id]; ok {
		r.mu.Unlock()
		if h.req.Ends != req.Ends || h.req.Seed != req.Seed {
			return runnerapi.Link{}, httpapi.Conflict("link %s joins %s and %s already", id, h.req.Ends[0], h.req.Ends[1])
		}
		return h.status(), nil
	}
	for _, o := range r.links {
		for _, e := range req.Ends {
			if slices.Contains(o.req.Ends[:], e) {
				r.mu.Unlock()
				return runnerapi.Link{}, httpapi.Conflict("port %s is linked already (link %s); a port takes one link", e, o.id)
			}
		}
	}
	h := &hostLink{id: id, req: req, faults: f, changed: make(chan struct{})}
	r.links[id] = h
	r.mu.Unlock()
	r.attach(h)
	return h.status(), nil
}

// link is the link named, or a 404.
func (r *Runner) link(id string) (*hostLink, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.links[id]
	if !ok {
		return nil, httpapi.NotFound("link %s not found on runner %s", id, r.cfg.ID)
	}
	return h, nil
}

// GetLink is a link's state.
func (r *Runner) GetLink(id string) (runnerapi.Link, error) {
	h, err := r.link(id)
	if err != nil {
		return runnerapi.Link{}, err
	}
	return h.status(), nil
}

// SetLinkFaults changes a link's faults, at once if it is attached.
func (r *Runner) SetLinkFaults(id string, in runnerapi.LinkFaults) (runnerapi.Link, error) {
	h, err := r.link(id)
	if err != nil {
		return runnerapi.Link{}, err
	}
	f, err := linkFaults(in)
	if err != nil {
		return runnerapi.Link{}, err
	}
	h.mu.Lock()
	h.faults, h.req.Faults = f, in
	if h.cur != nil {
		h.cur.SetFaults(f) // validated above; an ended link is being detached
	}
	h.mu.Unlock()
	return h.status(), nil
}

// LinkCapture is the latest attachment's kept records numbered above
// after (the link's numbering, which carries on across attachments, so a
// client polling with Next misses nothing of a power cycle's first
// records).
func (r *Runner) LinkCapture(id string, after uint64) (runnerapi.LinkCapture, error) {
	h, err := r.link(id)
	if err != nil {
		return runnerapi.LinkCapture{}, err
	}
	u, base, _, _ := h.latest()
	out := runnerapi.LinkCapture{Records: []runnerapi.LinkRecord{}, Next: after}
	if u == nil {
		return out, nil
	}
	for _, rec := range u.Capture(localSeq(after, base)) {
		out.Records = append(out.Records, linkRecord(base+rec.Seq, rec))
		out.Next = base + rec.Seq
	}
	return out, nil
}

// latest is the latest attachment (nil before the first) with the number
// its records' numbers start after, what to wait on for the next one, and
// whether the link is deleted.
func (h *hostLink) latest() (u *link.UART, base uint64, changed <-chan struct{}, deleted bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last, h.lastBase, h.changed, h.deleted
}

// localSeq is an attachment's own number for the link's number after,
// given the attachment's base.
func localSeq(after, base uint64) uint64 {
	if after > base {
		return after - base
	}
	return 0
}

func linkRecord(seq uint64, rec link.Record) runnerapi.LinkRecord {
	return runnerapi.LinkRecord{
		Seq: seq, Time: rec.Time, From: rec.From, To: rec.To, Data: rec.Data, Delivered: rec.Delivered,
		Down: rec.Down, Dropped: rec.Dropped, Lost: rec.Lost, Corrupted: rec.Corrupted,
	}
}

// DeleteLink detaches and forgets a link.
func (r *Runner) DeleteLink(id string) error {
	r.mu.Lock()
	h, ok := r.links[id]
	delete(r.links, id)
	r.mu.Unlock()
	if !ok {
		return httpapi.NotFound("link %s not found on runner %s", id, r.cfg.ID)
	}
	h.mu.Lock()
	h.deleted = true
	close(h.changed)
	u := h.cur
	h.mu.Unlock()
	if u != nil {
		u.Close()
	}
	return nil
}

// attachLinks attaches the links of a session whose machine now runs.
func (r *Runner) attachLinks(session string) {
	r.mu.Lock()
	var hs []*hostLink
	for _, h := range r.links {
		if h.req.Ends[0].Session == session || h.req.Ends[1].Session == session {
			hs = append(hs, h)
		}
	}
	r.mu.Unlock()
	for _, h := range hs {
		r.attach(h)
	}
}

// portOf is the live port of end e, nil unless its machine runs.
func (r *Runner) portOf(e runnerapi.LinkEnd) *livePort {
	s, err := r.slot(e.Session, false)
	if err != nil {
		return nil
	}
	return s.ports.running(e.Port)
}

// attach starts carrying the link's bytes if both ends' machines run and
// it is not attached yet.
func (r *Runner) attach(h *hostLink) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur != nil || h.deleted {
		return
	}
	var lps [2]*livePort
	for i, e := range h.req.Ends {
		if lps[i] = r.portOf(e); lps[i] == nil {
			return
		}
	}
	var taps, sides [2]net.Conn
	for i := range 2 {
		taps[i], sides[i] = net.Pipe()
	}
	closeAll := func() {
		for i := range 2 {
			lps[i].clearTap(taps[i])
			taps[i].Close()
			sides[i].Close()
		}
	}
	for i := range 2 {
		if !lps[i].setTap(taps[i]) {
			closeAll()
			return
		}
	}
	u, err := link.NewUART(sides[0], sides[1], link.Options{
		Names: [2]string{h.req.Ends[0].String(), h.req.Ends[1].String()}, Seed: h.req.Seed, Faults: h.faults,
		Log: r.log.With("link", h.id),
	})
	if err != nil {
		r.log.Error("attach link", "link", h.id, "err", err)
		closeAll()
		return
	}
	for i := range 2 {
		// What the link delivers to a machine goes to its port.
		go io.Copy(lps[i].conn, taps[i])
	}
	h.cur, h.last = u, u
	h.lastBase = h.seqBase
	h.attachments++
	close(h.changed)
	h.changed = make(chan struct{})
	r.log.Info("link attached", "link", h.id, "a", h.req.Ends[0], "b", h.req.Ends[1])
	go func() {
		<-u.Done()
		closeAll()
		h.mu.Lock()
		// Done comes after the capture's last record: the count is final.
		st := u.Stats()
		for i := range 2 {
			h.base[i] = addDirection(h.base[i], st.Directions[i])
		}
		h.seqBase += st.Records
		h.cur = nil
		h.mu.Unlock()
		if err := u.Err(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
			r.log.Info("link detached", "link", h.id, "err", err)
		}
		// An end's machine may have started again while this attachment
		// was ending (a restart does not wait for it): its attachLinks
		// found the link still attached, so the pair is joined here.
		// Ports that are gone or taken make it a no-op.
		r.attach(h)
	}()
}

func addDirection(a runnerapi.LinkDirection, d link.DirStats) runnerapi.LinkDirection {
	a.From, a.To = d.From, d.To
	a.Bytes += d.Bytes
	a.Delivered += d.Delivered
	a.Dropped += d.Dropped
	a.Lost += d.Lost
	a.Corrupted += d.Corrupted
	return a
}

func (h *hostLink) status() runnerapi.Link {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := runnerapi.Link{ID: h.id, Ends: h.req.Ends, Faults: h.req.Faults, Seed: h.req.Seed,
		Attached: h.cur != nil, Attachments: h.attachments, Directions: h.base}
	for i := range 2 {
		if l.Directions[i].From == "" {
			l.Directions[i].From, l.Directions[i].To = h.req.Ends[i].String(), h.req.Ends[1-i].String()
		}
	}
	if h.cur != nil {
		st := h.cur.Stats()
		for i := range 2 {
			l.Directions[i] = addDirection(l.Directions[i], st.Directions[i])
		}
	}
	return l
}

// Streams (GET .../links/{id}/stream and .../segments/{id}/stream) send a
// capture's records to a WebSocket client as they are made, one JSON text
// message each.
//
// A capture never waits for a subscriber: a record that finds a
// subscription's buffer full is skipped for it (Subscription.Missed), so a
// slow client cannot hold a link or a switch back. A stream therefore takes
// its subscription as a wake-up only and reads the records themselves from
// the capture, by number: what it skipped is still there unless the
// capture's bound has let it go since, and only such records are lost,
// reported in one runnerapi.StreamGap each run of them.

// recordSource is a capture a stream reads: a link's attachment or a
// segment's switch.
type recordSource interface {
	Subscribe(buffer int) *link.Subscription
	Capture(after uint64) []link.Record
}

// streamBuffer is a stream's subscription's buffer: wake-ups only (see
// above), so a small one serves; a full one just saves wake-ups.
const streamBuffer = 64

// recordStream is one client's stream.
type recordStream struct {
	c *websocket.Conn
	// next is the number of the last record sent (or reported lost), in
	// the stream's numbering.
	next   uint64
	encode func(seq uint64, rec link.Record) any
}

// follow sends src's records numbered (base plus their own number) above
// s.next as they are made, until src ends, when it returns nil once the
// last are sent; the error is the client's (or ctx's).
func (s *recordStream) follow(ctx context.Context, src recordSource, base uint64) error {
	// Subscribed before the kept records are read: a record made in
	// between is in both, and sent once, by its number.
	sub := src.Subscribe(streamBuffer)
	defer sub.Cancel()
	for {
		if err := s.catchUp(ctx, src, base); err != nil {
			return err
		}
		select {
		case _, ok := <-sub.C:
			if !ok {
				return s.catchUp(ctx, src, base)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		// What else waits is read from the capture below.
		for drained := false; !drained; {
			select {
			case _, ok := <-sub.C:
				if !ok {
					return s.catchUp(ctx, src, base)
				}
			default:
				drained = true
			}
		}
	}
}

// catchUp sends the kept records above s.next, and a gap for any the
// capture let go.
func (s *recordStream) catchUp(ctx context.Context, src recordSource, base uint64) error {
	for _, rec := range src.Capture(localSeq(s.next, base)) {
		seq := base + rec.Seq
		if seq <= s.next {
			continue
		}
		if seq > s.next+1 {
			if err := s.send(ctx, runnerapi.StreamGap{First: s.next + 1, Missed: seq - s.next - 1}); err != nil {
				return err
			}
		}
		if err := s.send(ctx, s.encode(seq, rec)); err != nil {
			return err
		}
		s.next = seq
	}
	return nil
}

func (s *recordStream) send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.c.Write(ctx, websocket.MessageText, b)
}

// parseAfter reads ?after=SEQ (0 when absent).
func parseAfter(req *http.Request) (uint64, error) {
	v := req.URL.Query().Get("after")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, httpapi.BadRequest("after must be a record number; got %q", v)
	}
	return n, nil
}

// acceptStream checks ?after= and upgrades: errors are answered before
// the upgrade, as JSON. ctx ends when the client goes away (it sends
// nothing a stream reads).
func acceptStream(w http.ResponseWriter, req *http.Request, encode func(uint64, link.Record) any) (context.Context, *recordStream, bool) {
	after, err := parseAfter(req)
	if err != nil {
		httpapi.WriteError(w, req, err)
		return nil, nil, false
	}
	c, err := websocket.Accept(w, req, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, nil, false
	}
	return c.CloseRead(req.Context()), &recordStream{c: c, next: after, encode: encode}, true
}

// streamLink streams a link's records across its attachments: it follows
// each to its end, then waits for the next (both ends' machines running
// again), until the link is deleted, which closes the stream normally.
func (r *Runner) streamLink(w http.ResponseWriter, req *http.Request) {
	h, err := r.link(req.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	ctx, s, ok := acceptStream(w, req, func(seq uint64, rec link.Record) any { return linkRecord(seq, rec) })
	if !ok {
		return
	}
	defer s.c.CloseNow()
	for {
		u, base, changed, deleted := h.latest()
		// Followed even when deleted: the ending attachment's last
		// records are sent before the close.
		if u != nil {
			if err := s.follow(ctx, u, base); err != nil {
				return
			}
		}
		if deleted {
			s.c.Close(websocket.StatusNormalClosure, "link deleted")
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}
