package qemu

import (
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The runner's end of a FIFO pair reads what the other end writes, tells
// how much waits (as a socket does), and ends once the writer is gone and
// exited has been called, after what was written is drained.
func TestPipeConn(t *testing.T) {
	dir := t.TempDir()
	p, err := openPipe(dir, "p0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// QEMU's side: it writes the .out FIFO and reads the .in one.
	qout, err := openWriter(dir + "/p0.out")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qout.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	raw, err := p.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	if n != 5 {
		t.Fatalf("%d bytes waiting, want 5", n)
	}
	if _, err := p.Write([]byte("in")); err != nil {
		t.Fatal(err)
	}
	qout.Close()
	p.exited()
	got, err := io.ReadAll(p)
	if string(got) != "hello" || err != nil {
		t.Fatalf("read %q, %v", got, err)
	}
}

func openWriter(path string) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_WRONLY, 0)
}
