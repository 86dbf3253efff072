package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/machineserver/machineserver/runner/console"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// consolePort is uart0, the port every request without ?port= means.
var consolePort = emulator.UARTPort(0)

// portRings are a session's console rings, one per port of its board by
// the seam's names (uart0..uartN), uart0's being the session's ring. They
// have their own lock, so a reader never waits for a start.
type portRings struct {
	mu    sync.Mutex
	size  int
	rings map[string]*console.Ring
	// names are the board's ports in order, with what the board calls
	// them; before the session has a board, only uart0 is known.
	names []string
	about []string
	// live are the running machine's ports, for links (links.go).
	live map[string]*livePort
}

func newPortRings(uart0 *console.Ring, size int) *portRings {
	return &portRings{size: size, rings: map[string]*console.Ring{consolePort: uart0}, names: []string{consolePort}, live: map[string]*livePort{}}
}

// running is the live port named, nil when no machine runs it.
func (p *portRings) running(name string) *livePort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[name]
}

func (p *portRings) setLive(name string, lp *livePort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[name] = lp
}

// dropLive forgets lp, unless a newer machine's port took its place.
func (p *portRings) dropLive(name string, lp *livePort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live[name] == lp {
		delete(p.live, name)
	}
}

// setBoard makes the board's ports known and gives each a ring.
func (p *portRings) setBoard(b board.Board) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.names, p.about = nil, nil
	for i := range max(len(b.UARTs), 1) {
		name := emulator.UARTPort(i)
		p.names = append(p.names, name)
		if i < len(b.UARTs) {
			p.about = append(p.about, fmt.Sprintf("%s (%s)", name, b.UARTs[i].Name))
		} else {
			p.about = append(p.about, name)
		}
		p.ringLocked(name)
	}
}

func (p *portRings) ringLocked(name string) *console.Ring {
	r, ok := p.rings[name]
	if !ok {
		r = console.NewRing(p.size)
		p.rings[name] = r
	}
	return r
}

// ring is the named port's ring, created for a port a machine has.
func (p *portRings) ring(name string) *console.Ring {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ringLocked(name)
}

// lookup is the ring of the port a request names ("" is uart0); a port
// the session's board does not have is a 400 listing those it has.
func (p *portRings) lookup(id, port string) (*console.Ring, error) {
	if port == "" {
		port = consolePort
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.names {
		if n == port {
			return p.ringLocked(n), nil
		}
	}
	about := p.about
	if about == nil {
		about = p.names
	}
	return nil, httpapi.BadRequest("port %q is not a port of session %s; its ports are %s", port, id, strings.Join(about, ", "))
}

func (p *portRings) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rings {
		r.Close()
	}
}

// pumpPorts copies every port of the machine into its ring until the
// machine's end closes them; in.pumped is closed when all have drained.
func (r *Runner) pumpPorts(s *session, in *instance) {
	var wg sync.WaitGroup
	for name, c := range in.m.Ports() {
		var drain chan chan int64
		if name == consolePort {
			drain = s.drain
		}
		ring := s.ports.ring(name)
		lp := &livePort{conn: c}
		s.ports.setLive(name, lp)
		wg.Go(func() {
			r.pump(ring, c, lp, drain)
			// The machine is gone: its links end with it.
			s.ports.dropLive(name, lp)
			lp.close()
		})
	}
	go func() {
		wg.Wait()
		close(in.pumped)
	}()
	r.attachLinks(s.id)
	r.attachSegments(s.id, in.m)
}

// pump copies a port into its ring until the connection closes; for the
// console it also answers drainConsole's requests on drain.
func (r *Runner) pump(ring *console.Ring, c net.Conn, lp *livePort, drain chan chan int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			ring.Write(buf[:n])
			lp.feed(buf[:n])
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// drainConsole's poke: only the pump reads, so only it can
			// tell that nothing is between the socket and the ring.
			c.SetReadDeadline(time.Time{})
			select {
			case reply := <-drain:
				for queued(c) > 0 {
					n, err := c.Read(buf)
					ring.Write(buf[:n])
					lp.feed(buf[:n])
					if err != nil {
						break
					}
				}
				reply <- ring.End()
			default:
			}
			continue
		}
		if err != nil {
			return
		}
		if n < len(buf) && r.cfg.ConsoleGather > 0 && !lp.linked() {
			// Output after a quiet spell still arrives at once; only a
			// stream is gathered (see Settings.ConsoleGather).
			time.Sleep(r.cfg.ConsoleGather)
		}
	}
}

// Input writes to the RX of the session's port ("" is uart0).
func (r *Runner) Input(id, port string, data []byte) error {
	s, err := r.slot(id, false)
	if err != nil {
		return httpapi.Conflict("session %s is not running; console input needs a running machine", id)
	}
	if _, err := s.ports.lookup(id, port); err != nil {
		return err
	}
	if port == "" {
		port = consolePort
	}
	s.mu.Lock()
	in := s.proc
	deterministic := s.last != nil && s.last.Deterministic
	s.mu.Unlock()
	if in == nil {
		return httpapi.Conflict("session %s is not running; console input needs a running machine", id)
	}
	if in.replaying != nil {
		return httpapi.Conflict("session %s replays a recording: its input is the recorded input, so it takes none", id)
	}
	c, ok := in.m.Ports()[port]
	if !ok {
		return httpapi.Conflict("session %s: its machine has no port %s", id, port)
	}
	s.touch()
	if in.tape != nil {
		return r.pacedInput(s, c, data)
	}
	if deterministic {
		return deterministicInput(s, in.m, c, data)
	}
	if _, err := c.Write(data); err != nil {
		return httpapi.Conflict("session %s: console write failed: %v", id, err)
	}
	return nil
}

// drainConsole returns where the paused guest's output stands: the ring's
// end once the pump has moved every byte the emulator wrote to the console
// connection into it. The pump is poked out of its read to do that itself;
// if it does not answer (its machine is gone) within a moment, the ring's
// end as it is.
func drainConsole(s *session, c net.Conn) int64 {
	reply := make(chan int64, 1)
	select {
	case s.drain <- reply:
	default: // a drain that timed out left its request: take its place
		select {
		case <-s.drain:
		default:
		}
		s.drain <- reply
	}
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case end := <-reply:
		return end
	case <-time.After(200 * time.Millisecond):
		return s.ring.End()
	}
}

// queued is how many bytes wait in a socket's receive queue.
func queued(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	return n
}
