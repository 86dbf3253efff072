package host

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// Segments are Ethernet networks between sessions on this runner: a
// link.Switch per segment, its ports the members' linked NICs (started
// with StartRequest.NIC). Like links, a segment outlives the machines: a
// member's NIC is attached whenever its machine starts, and its port ends
// with the machine. Segments live in the runner's memory.

type segment struct {
	id string
	sw *link.Switch

	mu  sync.Mutex
	req runnerapi.SegmentRequest
}

// PutSegment makes a segment of the members' NICs and attaches those
// whose machines run with one. Putting the same segment again is
// harmless; another under its id, or a member of another segment, is a
// 409.
func (r *Runner) PutSegment(id string, req runnerapi.SegmentRequest) (runnerapi.Segment, error) {
	if !model.ValidID(id) {
		return runnerapi.Segment{}, httpapi.BadRequest("segment id %q is not 16 lowercase hex digits", id)
	}
	if len(req.Members) < 2 {
		return runnerapi.Segment{}, httpapi.BadRequest("a segment joins two or more sessions; got %d", len(req.Members))
	}
	for i, m := range req.Members {
		if slices.Contains(req.Members[:i], m) {
			return runnerapi.Segment{}, httpapi.BadRequest("session %s is a member twice", m)
		}
		if _, err := r.slot(m, false); err != nil {
			return runnerapi.Segment{}, httpapi.Unprocessable("member %s has no emulator slot on runner %s (power it on with a NIC first)", m, r.cfg.ID)
		}
	}
	f, err := linkFaults(req.Faults)
	if err != nil {
		return runnerapi.Segment{}, err
	}
	r.mu.Lock()
	if r.segments == nil {
		r.segments = map[string]*segment{}
	}
	if g, ok := r.segments[id]; ok {
		r.mu.Unlock()
		if !slices.Equal(g.req.Members, req.Members) || g.req.Seed != req.Seed {
			return runnerapi.Segment{}, httpapi.Conflict("segment %s has other members already", id)
		}
		return g.status(), nil
	}
	for _, g := range r.segments {
		for _, m := range req.Members {
			if slices.Contains(g.req.Members, m) {
				r.mu.Unlock()
				return runnerapi.Segment{}, httpapi.Conflict("session %s is a member of segment %s already; a NIC joins one segment", m, g.id)
			}
		}
	}
	sw, err := link.NewSwitch(link.SwitchOptions{Seed: req.Seed, Faults: f, Log: r.log.With("segment", id)})
	if err != nil {
		r.mu.Unlock()
		return runnerapi.Segment{}, err
	}
	g := &segment{id: id, sw: sw, req: req}
	r.segments[id] = g
	r.mu.Unlock()
	for _, m := range req.Members {
		if s, err := r.slot(m, false); err == nil {
			s.mu.Lock()
			if s.proc != nil {
				g.attach(m, s.proc.m)
			}
			s.mu.Unlock()
		}
	}
	return g.status(), nil
}

// attach puts the member's machine's NIC on the switch, if it has one.
func (g *segment) attach(member string, m emulator.Machine) {
	w, ok := m.(emulator.Wired)
	if !ok || w.NIC() == nil {
		return
	}
	// An ended port of the member's last machine is replaced.
	g.sw.AddPort(member, w.NIC())
}

// attachSegments attaches a starting machine's NIC to its segment.
func (r *Runner) attachSegments(session string, m emulator.Machine) {
	r.mu.Lock()
	var in *segment
	for _, g := range r.segments {
		if slices.Contains(g.req.Members, session) {
			in = g
		}
	}
	r.mu.Unlock()
	if in != nil {
		in.attach(session, m)
	}
}

func (r *Runner) segment(id string) (*segment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.segments[id]
	if !ok {
		return nil, httpapi.NotFound("segment %s not found on runner %s", id, r.cfg.ID)
	}
	return g, nil
}

// GetSegment is a segment's state.
func (r *Runner) GetSegment(id string) (runnerapi.Segment, error) {
	g, err := r.segment(id)
	if err != nil {
		return runnerapi.Segment{}, err
	}
	return g.status(), nil
}

// SetSegmentFaults changes what the segment does to the frames it
// switches, from the next frame on.
func (r *Runner) SetSegmentFaults(id string, in runnerapi.LinkFaults) (runnerapi.Segment, error) {
	g, err := r.segment(id)
	if err != nil {
		return runnerapi.Segment{}, err
	}
	f, err := linkFaults(in)
	if err != nil {
		return runnerapi.Segment{}, err
	}
	if err := g.sw.SetFaults(f); err != nil {
		return runnerapi.Segment{}, httpapi.Conflict("segment %s: %v", id, err)
	}
	g.mu.Lock()
	g.req.Faults = in
	g.mu.Unlock()
	return g.status(), nil
}

// SegmentPcap writes the segment's capture as a pcap file.
func (r *Runner) SegmentPcap(id string, w io.Writer) error {
	g, err := r.segment(id)
	if err != nil {
		return err
	}
	return g.sw.WritePcap(w)
}

// DeleteSegment takes every NIC off the segment and forgets it.
func (r *Runner) DeleteSegment(id string) error {
	r.mu.Lock()
	g, ok := r.segments[id]
	delete(r.segments, id)
	r.mu.Unlock()
	if !ok {
		return httpapi.NotFound("segment %s not found on runner %s", id, r.cfg.ID)
	}
	// A port left mid-frame is no matter here: its machine's NIC is
	// isolated from now on, and what it sends next is dropped anyway.
	if err := g.sw.Close(); err != nil && !errors.Is(err, link.ErrTorn) {
		r.log.Warn("close segment", "segment", id, "err", err)
	}
	return nil
}

func (g *segment) status() runnerapi.Segment {
	g.mu.Lock()
	out := runnerapi.Segment{ID: g.id, Faults: g.req.Faults, Seed: g.req.Seed}
	members := slices.Clone(g.req.Members)
	g.mu.Unlock()
	st := g.sw.Stats()
	for _, m := range members {
		p := runnerapi.SegmentPort{Session: m}
		for _, ps := range st.Ports {
			if ps.Name == m {
				p.Attached = ps.Err == "" // a port that ended says why
				p.In, p.Out, p.Dropped, p.Lost, p.Corrupted, p.Overflow = ps.Frames, ps.FramesOut, ps.Dropped, ps.Lost, ps.Corrupted, ps.Overflow
			}
		}
		out.Ports = append(out.Ports, p)
	}
	return out
}

// streamSegment streams a segment's frames (see recordStream): the switch
// and its capture are the segment's for its whole life, members' power
// cycles included, so one follow serves until the segment is deleted,
// which closes the stream normally.
func (r *Runner) streamSegment(w http.ResponseWriter, req *http.Request) {
	g, err := r.segment(req.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	ctx, s, ok := acceptStream(w, req, func(seq uint64, rec link.Record) any { return frameRecord(seq, rec) })
	if !ok {
		return
	}
	defer s.c.CloseNow()
	if err := s.follow(ctx, g.sw, 0); err != nil {
		return
	}
	s.c.Close(websocket.StatusNormalClosure, "segment deleted")
}

// frameRecord is a switch's record in the API's terms (see
// link.Switch's Capture: sizes in bytes, To a comma-separated list).
func frameRecord(seq uint64, rec link.Record) runnerapi.FrameRecord {
	f := runnerapi.FrameRecord{
		Seq: seq, Time: rec.Time, From: rec.From, To: []string{}, Length: len(rec.Data), Data: rec.Data, Delivered: rec.Delivered,
		Dropped: rec.Dropped > 0, Down: rec.Down, Lost: rec.Lost > 0, Corrupted: rec.Corrupted > 0,
	}
	if rec.To != "" {
		f.To = strings.Split(rec.To, ",")
	}
	// The switch takes a frame shorter than an Ethernet header (14 bytes)
	// for a runt before any fault, and says so only by dropping it (an
	// empty one drops no bytes).
	f.Runt = len(rec.Data) < 14
	f.Dropped = f.Dropped || f.Runt
	return f
}
