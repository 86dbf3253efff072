package runnerapi

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// LinkEnd is one end of a link: a port of a session on the runner.
type LinkEnd struct {
	Session string `json:"session"`
	// Port is the seam's name (uart0..uartN).
	Port string `json:"port"`
}

func (e LinkEnd) String() string { return e.Session + ":" + e.Port }

// LinkFaults are what a link does to the bytes it carries (per byte; see
// runner/link) or the frames a segment switches. The zero value is a clean
// link.
type LinkFaults = model.LinkFaults

// LinkRequest joins two sessions' ports with a UART link (PUT
// /v1/links/{id}). The link outlives the sessions' machines: it carries
// bytes whenever both run, from their next start if they do not yet.
type LinkRequest struct {
	Ends   [2]LinkEnd `json:"ends"`
	Faults LinkFaults `json:"faults"`
	// Seed seeds the fault decisions, so a run's drops can be reproduced.
	Seed uint64 `json:"seed,omitempty"`
}

// LinkDirection is one direction's counters, in bytes.
type LinkDirection struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Bytes     uint64 `json:"bytes"`
	Delivered uint64 `json:"delivered"`
	Dropped   uint64 `json:"dropped"`
	Lost      uint64 `json:"lost"`
	Corrupted uint64 `json:"corrupted"`
}

// Link is a link's state on the runner.
type Link struct {
	ID     string     `json:"id"`
	Ends   [2]LinkEnd `json:"ends"`
	Faults LinkFaults `json:"faults"`
	Seed   uint64     `json:"seed"`
	// Attached: both machines run and the link carries their bytes.
	// Attachments counts how often it was attached (once per power cycle
	// of the pair).
	Attached    bool `json:"attached"`
	Attachments int  `json:"attachments"`
	// Directions are the counters since the link was made, a to b first.
	Directions [2]LinkDirection `json:"directions"`
}

// LinkRecord is one chunk that crossed a link, timestamped, with what the
// faults did to it. Seq numbers the link's records from 1 in the order
// they were made, both directions together and across its attachments (a
// power cycle of the pair carries the numbering on), so after= means the
// same to GET .../capture and to the stream.
type LinkRecord struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Data      []byte    `json:"data"`
	Delivered []byte    `json:"delivered,omitempty"`
	Down      bool      `json:"down,omitempty"`
	Dropped   int       `json:"dropped,omitempty"`
	Lost      int       `json:"lost,omitempty"`
	Corrupted int       `json:"corrupted,omitempty"`
}

// LinkCapture is the records kept, oldest first.
type LinkCapture struct {
	Records []LinkRecord `json:"records"`
	// Next is the after to ask with for what comes next.
	Next uint64 `json:"next"`
}

func linkPath(id string) string { return "/links/" + url.PathEscape(id) }

// PutLink creates a link.
func (c *Client) PutLink(ctx context.Context, id string, req LinkRequest) (Link, error) {
	var l Link
	err := c.call(ctx, http.MethodPut, linkPath(id), req, &l)
	return l, err
}

// SetLinkFaults changes a link's faults.
func (c *Client) SetLinkFaults(ctx context.Context, id string, f LinkFaults) (Link, error) {
	var l Link
	err := c.post(ctx, linkPath(id)+"/faults", f, &l)
	return l, err
}

// GetLink is a link's state.
func (c *Client) GetLink(ctx context.Context, id string) (Link, error) {
	var l Link
	err := c.call(ctx, http.MethodGet, linkPath(id), nil, &l)
	return l, err
}

// LinkCapture is the link's records after seq after.
func (c *Client) LinkCapture(ctx context.Context, id string, after uint64) (LinkCapture, error) {
	var lc LinkCapture
	err := c.call(ctx, http.MethodGet, linkPath(id)+"/capture?after="+strconv.FormatUint(after, 10), nil, &lc)
	return lc, err
}

// DeleteLink removes a link.
func (c *Client) DeleteLink(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, linkPath(id), nil, nil)
}

// LinkStreamPath is the path, relative to a Client (for Client.Proxy), of
// the link's live stream: a WebSocket of JSON text messages, one
// LinkRecord each (or a StreamGap), from the records kept after ?after=SEQ
// on, across the link's attachments, closed normally when the link is
// deleted.
func LinkStreamPath(id string) string { return linkPath(id) + "/stream" }

// StreamGap is the message a link's or a segment's stream sends in place
// of records it cannot send any more: Missed records, numbered First on,
// were let go by the runner's bounded capture before the stream read them
// (a client reading slower than the link carries, an after= older than
// what is kept, or an attachment the stream joined after its end). A
// record message always has a seq; a gap never does.
type StreamGap struct {
	Missed uint64 `json:"missed"`
	First  uint64 `json:"first"`
}

// NIC is a linked NIC's settings (StartRequest.NIC).
type NIC struct {
	// MAC is unicast, lowercase hex ("02:00:00:00:00:01"), and unique on
	// its segment: every board of a kind has the same default.
	MAC string `json:"mac"`
}

// SegmentRequest joins the linked NICs of sessions on the runner into one
// Ethernet segment, a switch that forwards frames by MAC learning (PUT
// /v1/segments/{id}). A member's NIC is attached whenever its machine runs.
type SegmentRequest struct {
	Members []string   `json:"members"`
	Faults  LinkFaults `json:"faults"`
	Seed    uint64     `json:"seed,omitempty"`
}

// SegmentPort is one member's port on a segment, its counters in frames.
type SegmentPort struct {
	Session string `json:"session"`
	// Attached: the member's machine runs with a linked NIC on the segment.
	Attached bool `json:"attached"`
	// In were sent by the member; Out delivered to it.
	In        uint64 `json:"in"`
	Out       uint64 `json:"out"`
	Dropped   uint64 `json:"dropped"`
	Lost      uint64 `json:"lost"`
	Corrupted uint64 `json:"corrupted"`
	// Overflow were meant for the member but its queue was full (a
	// machine that does not take frames, e.g. a paused one).
	Overflow uint64 `json:"overflow"`
}

// Segment is a segment's state on the runner.
type Segment struct {
	ID     string        `json:"id"`
	Faults LinkFaults    `json:"faults"`
	Seed   uint64        `json:"seed"`
	Ports  []SegmentPort `json:"ports"`
}

func segmentPath(id string) string { return "/segments/" + url.PathEscape(id) }

// PutSegment creates a segment.
func (c *Client) PutSegment(ctx context.Context, id string, req SegmentRequest) (Segment, error) {
	var s Segment
	err := c.call(ctx, http.MethodPut, segmentPath(id), req, &s)
	return s, err
}

// SetSegmentFaults changes a segment's faults.
func (c *Client) SetSegmentFaults(ctx context.Context, id string, f LinkFaults) (Segment, error) {
	var s Segment
	err := c.post(ctx, segmentPath(id)+"/faults", f, &s)
	return s, err
}

// GetSegment is a segment's state.
func (c *Client) GetSegment(ctx context.Context, id string) (Segment, error) {
	var s Segment
	err := c.call(ctx, http.MethodGet, segmentPath(id), nil, &s)
	return s, err
}

// SegmentPcap writes the segment's capture, a pcap file, to w.
func (c *Client) SegmentPcap(ctx context.Context, id string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, segmentPath(id)+"/pcap", nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// DeleteSegment removes a segment.
func (c *Client) DeleteSegment(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, segmentPath(id), nil, nil)
}

// FrameRecord is one Ethernet frame a member's NIC sent on a segment,
// timestamped, with where the segment switched it and what the faults
// did to it.
type FrameRecord struct {
	// Seq numbers the segment's frames from 1 in the order the switch
	// took them, every member's together.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// From is the member (session id) whose NIC sent the frame; To the
	// members it was forwarded to, in name order: one for a learned
	// address, every other member for a flood, none when it was dropped
	// or went nowhere. A member whose queue was full still lost it (see
	// SegmentPort.Overflow).
	From string   `json:"from"`
	To   []string `json:"to"`
	// Length is the frame's length in bytes, Data the frame as sent (from
	// the destination address on, without FCS), Delivered the frame as
	// delivered when Corrupted flipped one of its bits.
	Length    int    `json:"length"`
	Data      []byte `json:"data"`
	Delivered []byte `json:"delivered,omitempty"`
	// Dropped: not delivered to anyone, because the segment was Down, the
	// Loss fault took it (Lost), or it was a Runt (shorter than an
	// Ethernet header, so it could not be switched).
	Dropped   bool `json:"dropped,omitempty"`
	Down      bool `json:"down,omitempty"`
	Lost      bool `json:"lost,omitempty"`
	Runt      bool `json:"runt,omitempty"`
	Corrupted bool `json:"corrupted,omitempty"`
}

// SegmentStreamPath is the path, relative to a Client (for Client.Proxy),
// of the segment's live stream: a WebSocket of JSON text messages, one
// FrameRecord each (or a StreamGap), from the frames kept after
// ?after=SEQ on, closed normally when the segment is deleted. A message
// can be about 190 KB (a 69 KB frame sent and delivered, in base64): a
// client's read limit must allow it.
func SegmentStreamPath(id string) string { return segmentPath(id) + "/stream" }

// ClockRequest keeps the virtual clocks of a system's nodes (sessions
// started with VirtualTime and resumed together) within Quantum of each
// other: the runner pauses a node that runs ahead until the others catch
// up.
type ClockRequest struct {
	Sessions []string `json:"sessions"`
	// Quantum is a Go duration from 1ms to 1s; "" is 20ms.
	Quantum string `json:"quantum,omitempty"`
}

// Clock is a barrier's state: what it has measured since it was put.
type Clock struct {
	ID       string   `json:"id"`
	Sessions []string `json:"sessions"`
	Quantum  string   `json:"quantum"`
	// Running is false once a node's machine ended (Reason says how) or
	// the clock was deleted.
	Running bool   `json:"running"`
	Reason  string `json:"reason,omitempty"`
	// Polls counts readings of every node's clock; MaxSpreadMS is the
	// largest distance between the nodes' guest clocks at one reading.
	Polls       int     `json:"polls"`
	MaxSpreadMS float64 `json:"max_spread_ms"`
	// Holds counts the times a node was paused for the others, HeldMS the
	// host time they spent so: what the bound cost.
	Holds  int     `json:"holds"`
	HeldMS float64 `json:"held_ms"`
}

func clockPath(id string) string { return "/clocks/" + url.PathEscape(id) }

// PutClock starts (or starts again) a barrier over the sessions' virtual
// clocks.
func (c *Client) PutClock(ctx context.Context, id string, req ClockRequest) (Clock, error) {
	var out Clock
	err := c.call(ctx, http.MethodPut, clockPath(id), req, &out)
	return out, err
}

// GetClock is the barrier's state.
func (c *Client) GetClock(ctx context.Context, id string) (Clock, error) {
	var out Clock
	err := c.call(ctx, http.MethodGet, clockPath(id), nil, &out)
	return out, err
}

// DeleteClock stops the barrier (resuming any node it holds) and answers
// its last state.
func (c *Client) DeleteClock(ctx context.Context, id string) (Clock, error) {
	var out Clock
	err := c.call(ctx, http.MethodDelete, clockPath(id), nil, &out)
	return out, err
}
