package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// eventBuffer is how many events may wait for a slow consumer before the
// oldest are dropped.
const eventBuffer = 128

// dialInterval is how often Dial retries while QEMU has not created or is not
// yet listening on its socket; QEMU starts in tens of milliseconds, so a
// coarse poll would dominate session start-up.
const dialInterval = 2 * time.Millisecond

// longAgo is a deadline in the past: setting it makes blocked I/O return.
var longAgo = time.Unix(1, 0)

// Event is an asynchronous QMP event such as STOP, RESUME, RESET or SHUTDOWN.
type Event struct {
	Name      string          `json:"event"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp time.Time       `json:"timestamp"`
}

// Monitor is a connected QMP session. Safe for concurrent use.
type Monitor struct {
	conn   net.Conn
	events chan Event
	done   chan struct{}

	writeMu sync.Mutex // one request on the wire at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply // nil once the connection has ended
	closing bool                  // Close was called
	err     error
}

type reply struct {
	ret json.RawMessage
	err error
}

// message is any server message: greeting, reply or event.
type message struct {
	QMP       json.RawMessage `json:"QMP"`
	ID        json.RawMessage `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	ID        uint64          `json:"id"`
}

// Dial connects to a QMP unix or tcp socket and runs the handshake. It keeps
// retrying the connection until ctx is done, because QEMU may not have
// created its socket yet; give ctx a deadline.
func Dial(ctx context.Context, network, addr string) (*Monitor, error) {
	var d net.Dialer
	var last error
	for {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			return New(ctx, conn)
		}
		// An attempt cut short by ctx says less than the one before it.
		cut := ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)
		if last == nil || !cut {
			last = err
		}
		t := time.NewTimer(dialInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("qmp: dial %s %s: %w (last attempt: %v)", network, addr, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// New runs the handshake over conn and takes ownership of it: conn is closed
// by Close, when the peer hangs up, or when New fails.
func New(ctx context.Context, conn net.Conn) (*Monitor, error) {
	// A deadline in the past unblocks the handshake's reads and writes.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(longAgo) })
	dec := json.NewDecoder(conn)
	err := handshake(conn, dec)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: handshake: %w", err)
	}
	m := &Monitor{
		conn:    conn,
		events:  make(chan Event, eventBuffer),
		done:    make(chan struct{}),
		pending: make(map[string]chan reply),
		nextID:  1, // 0 was qmp_capabilities
	}
	go m.read(dec)
	return m, nil
}

func handshake(conn net.Conn, dec *json.Decoder) error {
	var greeting message
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if greeting.QMP == nil {
		return errors.New("greeting has no QMP member: not a QMP server")
	}
	b, err := json.Marshal(request{Execute: "qmp_capabilities"})
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	for {
		var msg message
		if err := dec.Decode(&msg); err != nil {
			return fmt.Errorf("qmp_capabilities: %w", err)
		}
		switch {
		case msg.Error != nil:
			return msg.Error
		case msg.Return != nil:
			return nil
		}
		// QEMU sends no events before negotiation; skip anything else.
	}
}

// read is the only reader of the connection. It routes replies to waiting
// Executes and events to the events channel until the connection ends.
func (m *Monitor) read(dec *json.Decoder) {
	var err error
	for {
		var msg message
		if err = dec.Decode(&msg); err != nil {
			break
		}
		if msg.Event != "" {
			m.deliver(Event{
				Name:      msg.Event,
				Data:      msg.Data,
				Timestamp: time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000),
			})
			continue
		}
		if msg.Return == nil && msg.Error == nil {
			continue // neither reply nor event: nothing waits for it
		}
		m.mu.Lock()
		ch := m.pending[string(msg.ID)]
		delete(m.pending, string(msg.ID))
		m.mu.Unlock()
		if ch == nil {
			continue // its Execute gave up (ctx) or it is not ours
		}
		if msg.Error != nil {
			ch <- reply{err: msg.Error}
		} else {
			ch <- reply{ret: msg.Return}
		}
	}
	m.finish(err)
}

// deliver never blocks: a slow consumer loses the oldest events, not the
// replies the reader must keep routing.
func (m *Monitor) deliver(ev Event) {
	for {
		select {
		case m.events <- ev:
			return
		default:
		}
		select {
		case <-m.events:
		default:
		}
	}
}

func (m *Monitor) finish(readErr error) {
	m.conn.Close()
	m.mu.Lock()
	switch {
	case m.closing:
		m.err = ErrClosed
	case errors.Is(readErr, io.EOF):
		m.err = io.EOF
	default:
		m.err = fmt.Errorf("qmp: read: %w", readErr)
	}
	pending, why := m.pending, m.err
	m.pending = nil
	m.mu.Unlock()
	if why != ErrClosed {
		why = fmt.Errorf("%w: %w", ErrClosed, why)
	}
	for _, ch := range pending {
		ch <- reply{err: why}
	}
	close(m.events)
	close(m.done)
}

// Execute runs command with args (nil for none; otherwise anything that
// encodes to a JSON object) and returns the reply's "return" value. An error
// reply is returned as *Error. If ctx ends first, Execute returns ctx.Err()
// and the late reply is discarded.
func (m *Monitor) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	c, err := m.Send(ctx, command, args)
	if err != nil {
		return nil, err
	}
	return c.Wait(ctx)
}

// Call is a command sent whose reply has not been collected yet.
type Call struct {
	m       *Monitor
	command string
	key     string
	ch      chan reply
}

// Send writes command without waiting for its reply; Wait collects it.
// QEMU runs commands in the order they arrive, so commands sent one after
// another and then waited for cost one round trip instead of one each.
func (m *Monitor) Send(ctx context.Context, command string, args any) (*Call, error) {
	req := request{Execute: command}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("qmp: %s: encode arguments: %w", command, err)
		}
		req.Arguments = b
	}
	c := &Call{m: m, command: command, ch: make(chan reply, 1)}
	m.mu.Lock()
	if m.pending == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("qmp: %s: %w", command, ErrClosed)
	}
	req.ID = m.nextID
	m.nextID++
	c.key = strconv.FormatUint(req.ID, 10)
	m.pending[c.key] = c.ch
	m.mu.Unlock()

	if err := m.send(ctx, req); err != nil {
		m.forget(c.key)
		return nil, fmt.Errorf("qmp: %s: %w", command, err)
	}
	return c, nil
}

// Wait returns the reply's "return" value, as Execute does.
func (c *Call) Wait(ctx context.Context) (json.RawMessage, error) {
	select {
	case r := <-c.ch:
		if r.err != nil {
			return nil, fmt.Errorf("qmp: %s: %w", c.command, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		c.m.forget(c.key)
		return nil, fmt.Errorf("qmp: %s: %w", c.command, ctx.Err())
	}
}

func (m *Monitor) forget(key string) {
	m.mu.Lock()
	delete(m.pending, key) // no-op once finish has taken the map
	m.mu.Unlock()
}

// send writes one request. No newline follows it: QEMU dispatches as soon
// as the object's braces balance, so a trailing byte would still be unread
// when quit makes QEMU close the socket, and Linux then reports
// ECONNRESET instead of EOF to us.
//
// A write cut short by ctx leaves a partial request
// on the wire, after which the stream cannot be trusted: the connection is
// closed then, and on any other write error.
func (m *Monitor) send(ctx context.Context, req request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}

	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	m.conn.SetWriteDeadline(time.Time{}) // undo an earlier cancellation
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		m.conn.SetWriteDeadline(longAgo)
		close(fired)
	})
	n, err := m.conn.Write(b)
	if !stop() {
		<-fired // so the next send's reset cannot be overtaken
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		if n > 0 {
			m.conn.Close()
		}
		return ctx.Err()
	}
	m.conn.Close()
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// HumanCommand runs an HMP command line through human-monitor-command and
// returns its output. HMP reports failures only in that text (the QMP
// command itself succeeds), so callers must inspect it.
func (m *Monitor) HumanCommand(ctx context.Context, cmdline string) (string, error) {
	ret, err := m.Execute(ctx, "human-monitor-command", map[string]string{"command-line": cmdline})
	if err != nil {
		return "", err
	}
	var out string
	if err := json.Unmarshal(ret, &out); err != nil {
		return "", fmt.Errorf("qmp: human-monitor-command: %w", err)
	}
	return out, nil
}

// Status returns the run state from query-status, e.g. "prelaunch" (started
// with -S), "running", "paused", "shutdown".
func (m *Monitor) Status(ctx context.Context) (string, error) {
	ret, err := m.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return "", fmt.Errorf("qmp: query-status: %w", err)
	}
	return st.Status, nil
}

// Events delivers asynchronous events. It is buffered; when the consumer
// falls behind, the oldest events are dropped rather than stalling replies.
// It is closed when the connection ends.
func (m *Monitor) Events() <-chan Event { return m.events }

// Done is closed when the connection has ended and the reader has stopped.
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Err says why the connection ended: nil while it is up, io.EOF when the peer
// hung up cleanly (QEMU quit or exited), ErrClosed after Close, otherwise the
// read error (for example a JSON syntax error).
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close ends the session and waits for the reader goroutine to stop. Waiting
// Executes fail with ErrClosed. It is safe to call more than once.
func (m *Monitor) Close() error {
	m.mu.Lock()
	if m.pending != nil { // already ended: keep the real reason
		m.closing = true
	}
	m.mu.Unlock()
	m.conn.Close()
	<-m.done
	return nil
}
