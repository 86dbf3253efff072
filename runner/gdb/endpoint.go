package gdb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Why a debugger was refused; ServeConn wraps them with details.
var (
	ErrBusy       = errors.New("gdb: another debugger is attached to this session")
	ErrNotRunning = errors.New("gdb: the session's emulator is not running")
	ErrClosed     = errors.New("gdb: endpoint closed")
)

const (
	// firstPacketWait is how long a connected client may stay silent or send
	// only garbage. It holds nothing meanwhile: the emulator is dialed (which
	// pauses the VM) and the one-debugger slot taken only on a real packet.
	firstPacketWait = 30 * time.Second
	stubDialWait    = 5 * time.Second
)

// Client is the debugger currently attached.
type Client struct {
	Who   string
	Since time.Time
}

// Endpoint is one session's debugger access. The runner owns the listeners;
// QEMU's stub stays on its unix socket and is dialed once per debugger.
type Endpoint struct {
	log *slog.Logger

	mu     sync.Mutex
	stub   string // unix socket of the emulator's gdbstub; "" while off
	closed bool
	lns    []net.Listener
	conns  map[net.Conn]struct{} // every client connection, for Close
	cur    *Client
	// last and lastEnd remember the previous debugger, so an emulator exit
	// that races its detach (gdb's kill) can still be put down to it.
	last    *Client
	lastEnd time.Time
	wg      sync.WaitGroup // accept loops and ServeConn calls
	onLink  func(Link)
}

// Link is a debugger attaching (EndedBy empty) or detaching, for OnLink.
type Link struct {
	Client
	// EndedBy says what ended the link: "debugger", "emulator" (killed,
	// powered off, or the stub failed), "caller" or "endpoint closed".
	EndedBy string
}

// OnLink has f called, on the debugger's goroutine, after each attach and
// each detach, in that order. Set it before the endpoint serves.
func (e *Endpoint) OnLink(f func(Link)) {
	e.mu.Lock()
	e.onLink = f
	e.mu.Unlock()
}

func (e *Endpoint) notify(l Link) {
	e.mu.Lock()
	f := e.onLink
	e.mu.Unlock()
	if f != nil {
		f(l)
	}
}

// New returns an endpoint with no emulator behind it yet (see SetStub).
func New(log *slog.Logger) *Endpoint {
	if log == nil {
		log = slog.Default()
	}
	return &Endpoint{log: log, conns: map[net.Conn]struct{}{}}
}

// SetStub points the endpoint at the emulator's gdbstub socket (qemu.GDBSocket
// in the instance directory); "" means the machine is off and debuggers are
// refused. An attached debugger keeps its link until that emulator ends it.
func (e *Endpoint) SetStub(path string) {
	e.mu.Lock()
	e.stub = path
	e.mu.Unlock()
}

// Attached reports the debugger currently attached, if any.
func (e *Endpoint) Attached() (Client, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		return Client{}, false
	}
	return *e.cur, true
}

// Recent reports the attached debugger, or the one that detached within d.
func (e *Endpoint) Recent(d time.Duration) (Client, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil {
		return *e.cur, true
	}
	if e.last != nil && time.Since(e.lastEnd) <= d {
		return *e.last, true
	}
	return Client{}, false
}

// Admit decides whether a TCP client may debug. It returns the audit label
// or an error whose text the debugger is shown. It runs on the accept loop:
// keep it quick and do not read from c.
type Admit func(c net.Conn) (who string, err error)

// ListenTCP opens a direct TCP listener (e.g. "0.0.0.0:0" or a port from a
// configured range) and serves debuggers on it until Close. admit may be nil
// (everyone is admitted, labelled "tcp <remote address>"); it is the hook
// for credentials on a path where gdb itself cannot present any.
func (e *Endpoint) ListenTCP(addr string, admit Admit) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gdb: listen: %w", err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return nil, ErrClosed
	}
	e.lns = append(e.lns, ln)
	e.wg.Add(1)
	e.mu.Unlock()
	go e.accept(ln, admit)
	return ln.Addr(), nil
}

func (e *Endpoint) accept(ln net.Listener, admit Admit) {
	defer e.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			e.log.Warn("gdb accept", "addr", ln.Addr().String(), "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// Delayed ACKs would stall every request/reply exchange ~40 ms.
		_ = c.(*net.TCPConn).SetNoDelay(true)
		who, deny := "tcp "+c.RemoteAddr().String(), error(nil)
		if admit != nil {
			if w, err := admit(c); w != "" || err != nil {
				who, deny = w, err
			}
		}
		go e.serve(context.Background(), c, who, deny)
	}
}

// ServeConn attaches one debugger connection (from ListenTCP, the WebSocket
// tunnel, or anything else carrying RSP) and blocks until its link ends; it
// always closes c. who labels the client in the audit log and in the refusal
// another debugger gets. A debugger is refused, with a message gdb prints,
// when one is already attached (ErrBusy) or the emulator is off
// (ErrNotRunning). ctx ending cuts the link.
func (e *Endpoint) ServeConn(ctx context.Context, c net.Conn, who string) error {
	return e.serve(ctx, c, who, nil)
}

func (e *Endpoint) serve(ctx context.Context, c net.Conn, who string, deny error) error {
	if !e.track(c) {
		c.Close()
		return ErrClosed
	}
	defer e.untrack(c)
	stop := context.AfterFunc(ctx, func() { abort(c) })
	defer stop()

	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(firstPacketWait))
	first, err := readPacket(r)
	if err != nil {
		return fmt.Errorf("gdb: %s sent no packet: %w", who, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if deny != nil {
		e.log.Warn("gdb refused", "who", who, "reason", deny.Error())
		refuse(c, r, refusal(deny))
		return deny
	}
	stub, since, err := e.attach(who)
	if err != nil {
		e.log.Warn("gdb refused", "who", who, "reason", err.Error())
		refuse(c, r, refusal(err))
		return err
	}
	defer e.detach(stub)
	e.log.Info("gdb attached", "who", who, "at", since)
	e.notify(Link{Client: Client{Who: who, Since: since}})

	var clientEnded bool
	var up, down int64
	if _, err = stub.Write(first); err == nil {
		clientEnded, up, down = splice(c, r, stub)
	}
	ended := "emulator" // killed (gdb kill), powered off, or the stub write failed
	switch {
	case e.isClosed():
		ended = "endpoint closed"
	case ctx.Err() != nil:
		ended = "caller"
	case clientEnded:
		ended = "debugger"
	}
	e.log.Info("gdb detached", "who", who, "attached_for", time.Since(since).Round(time.Millisecond).String(),
		"ended_by", ended, "bytes_from_debugger", up+int64(len(first)), "bytes_to_debugger", down)
	e.notify(Link{Client: Client{Who: who, Since: since}, EndedBy: ended})
	return nil
}

// attach takes the one-debugger slot and dials the emulator's stub.
func (e *Endpoint) attach(who string) (net.Conn, time.Time, error) {
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return nil, time.Time{}, ErrClosed
	case e.cur != nil:
		cur := *e.cur
		e.mu.Unlock()
		return nil, time.Time{}, fmt.Errorf("%w (%s, since %s)", ErrBusy, cur.Who, cur.Since.UTC().Format(time.RFC3339))
	case e.stub == "":
		e.mu.Unlock()
		return nil, time.Time{}, ErrNotRunning
	}
	path, now := e.stub, time.Now()
	e.cur = &Client{Who: who, Since: now}
	e.mu.Unlock()

	s, err := net.DialTimeout("unix", path, stubDialWait)
	if err != nil {
		e.detach(nil)
		return nil, time.Time{}, fmt.Errorf("%w: its gdb stub does not answer: %v", ErrNotRunning, err)
	}
	return s, now, nil
}

// detach closes the stub connection before freeing the slot, so the next
// debugger never races the previous one for QEMU's single stub client.
func (e *Endpoint) detach(stub net.Conn) {
	if stub != nil {
		stub.Close()
	}
	e.mu.Lock()
	if e.cur != nil {
		e.last, e.lastEnd = e.cur, time.Now()
	}
	e.cur = nil
	e.mu.Unlock()
}

// refusal is what a refused debugger is shown; the prefix tells the user
// it is the platform speaking, not the emulator.
func refusal(err error) string {
	msg := "machineserver: " + strings.TrimPrefix(err.Error(), "gdb: ")
	switch {
	case errors.Is(err, ErrBusy):
		return msg + "; only one debugger at a time, detach the other first"
	case errors.Is(err, ErrNotRunning):
		return msg + "; power it on first (poweron?halted=true stops at the reset vector)"
	case errors.Is(err, ErrClosed):
		return "machineserver: the session is gone"
	}
	return msg
}

func (e *Endpoint) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

func (e *Endpoint) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	return true
}

func (e *Endpoint) untrack(c net.Conn) {
	c.Close()
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.wg.Done()
}

// Close cuts every link and stops the listeners (the session was deleted);
// it returns once every goroutine of the endpoint has ended. Later clients
// are closed at once.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	e.closed = true
	lns, conns := e.lns, make([]net.Conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.lns = nil
	e.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		abort(c)
	}
	e.wg.Wait()
	return nil
}

// abort closes c without any goodbye (no WebSocket close handshake) so a
// client that does not answer cannot hold Close up.
func abort(c net.Conn) {
	if n, ok := c.(interface{ CloseNow() error }); ok {
		n.CloseNow()
		return
	}
	c.Close()
}

// splice copies both ways until either side ends, then closes both so the
// other copy ends too. It reports whether the client ended first and the
// bytes each way.
func splice(client net.Conn, fromClient io.Reader, stub net.Conn) (clientEnded bool, up, down int64) {
	type result struct {
		fromClient bool
		n          int64
	}
	done := make(chan result, 2)
	go func() {
		n, _ := io.Copy(stub, fromClient)
		done <- result{true, n}
	}()
	go func() {
		n, _ := io.Copy(client, stub)
		done <- result{false, n}
	}()
	first := <-done
	client.Close()
	stub.Close()
	second := <-done
	for _, r := range []result{first, second} {
		if r.fromClient {
			up = r.n
		} else {
			down = r.n
		}
	}
	return first.fromClient, up, down
}

// Pipe joins two byte streams (a local debugger and a tunnel) until either
// ends, then closes both.
func Pipe(a, b net.Conn) {
	splice(a, a, b)
}
