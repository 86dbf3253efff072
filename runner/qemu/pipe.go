package qemu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A recording machine's UARTs are FIFOs (QEMU's pipe chardev), not
// sockets. QEMU's UART models write a byte at a time without blocking, and
// when the backend pushes back they retry from a main-loop watch, which the
// replay log does not record: the replay then writes at another instant and
// QEMU 7.2 stops with "Missing character write event in the replay log". A
// unix socket pushes back after a few hundred single-byte writes (each
// costs a whole buffer of the sender's budget), so a guest printing a
// boot banner while the runner's reader was descheduled broke its replay;
// a FIFO holds pipeSize bytes, seconds of the fastest console.
const pipeSize = 1 << 20

// pipes says whether the machine's UARTs are FIFOs: when it records, and
// when it replays, where QEMU writes each byte with a blocking retry (a
// 100 µs sleep per refusal) that a socket would make the replay's pace.
func (c Clock) pipes() bool { return c.Record != "" || c.Replay != "" }

// serialPipe is the FIFO pair's base name of the i-th serial port: QEMU
// reads the guest's input from base.in and writes its output to base.out.
func serialPipe(i int) string { return fmt.Sprintf("p%d", i) }

// pipeConn is the runner's end of a serial port's FIFO pair, as a net.Conn.
type pipeConn struct {
	out *os.File // the guest's output, read here
	in  *os.File // the guest's input, written here
	// hold keeps a writer on out until QEMU has exited: without one, a
	// read before QEMU opened its end would be an end of file. Closed
	// then, reads drain what QEMU wrote and end.
	hold *os.File
}

// openPipe makes the FIFO pair base.in/base.out in dir and opens the
// runner's ends; QEMU opens its own when it starts.
func openPipe(dir, base string) (*pipeConn, error) {
	path := filepath.Join(dir, base)
	for _, ext := range []string{".in", ".out"} {
		os.Remove(path + ext)
		if err := syscall.Mkfifo(path+ext, 0o600); err != nil {
			return nil, fmt.Errorf("qemu: mkfifo %s: %w", path+ext, err)
		}
	}
	p := &pipeConn{}
	var err error
	// Nonblocking, so the files use Go's poller (deadlines, a Close that
	// ends a blocked Read); a FIFO opened for reading so does not wait
	// for a writer.
	if p.out, err = os.OpenFile(path+".out", os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("qemu: open %s: %w", path+".out", err)
	}
	if p.hold, err = os.OpenFile(path+".out", os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		// Read-write never waits for QEMU, nor fails once it is gone.
		p.in, err = os.OpenFile(path+".in", os.O_RDWR|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("qemu: open %s: %w", path, err)
	}
	// As large as the system allows (unprivileged: fs.pipe-max-size, 1 MiB
	// by default); the default 64 KiB if not.
	if raw, err := p.out.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
	return p, nil
}

// exited lets reads end once they have drained what QEMU wrote.
func (p *pipeConn) exited() {
	if p.hold != nil {
		p.hold.Close()
	}
}

func (p *pipeConn) Read(b []byte) (int, error) {
	n, err := p.out.Read(b)
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return n, err
}

func (p *pipeConn) Write(b []byte) (int, error) {
	n, err := p.in.Write(b)
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return n, err
}

func (p *pipeConn) Close() error {
	var errs []error
	for _, f := range []*os.File{p.out, p.hold, p.in} {
		if f != nil {
			if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (p *pipeConn) LocalAddr() net.Addr  { return pipeAddr(p.out.Name()) }
func (p *pipeConn) RemoteAddr() net.Addr { return pipeAddr(p.in.Name()) }

func (p *pipeConn) SetDeadline(t time.Time) error {
	return errors.Join(p.out.SetReadDeadline(t), p.in.SetWriteDeadline(t))
}
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return p.out.SetReadDeadline(t) }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return p.in.SetWriteDeadline(t) }

// SyscallConn is the output FIFO's, so the runner can ask how many bytes
// wait in it (FIONREAD), as it does of a socket before it declares a
// console drained.
func (p *pipeConn) SyscallConn() (syscall.RawConn, error) { return p.out.SyscallConn() }

// pipeAddr names a FIFO as a net.Addr.
type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }
