package firmware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// caseTimeout only guards against a hung QEMU; a healthy case takes well under a second.
const caseTimeout = 30 * time.Second

type board struct {
	name      string
	flashBase string // where fw.bin belongs
}

var boards = []board{
	{name: "netduino2", flashBase: "0x08000000"},
	{name: "mps2-an385", flashBase: "0"},
	{name: "lm3s6965evb", flashBase: "0"},
}

// loadArgs returns the QEMU arguments that load one image format.
// QEMU 7.2 loads "-kernel fw.hex" as raw bytes, so HEX goes through the loader device.
func loadArgs(dir string, b board, format string) []string {
	img := filepath.Join(dir, b.name, "fw."+format)
	switch format {
	case "elf":
		return []string{"-kernel", img}
	case "bin":
		return []string{"-device", "loader,file=" + img + ",addr=" + b.flashBase}
	default:
		return []string{"-device", "loader,file=" + img}
	}
}

func firmwareDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatalf("locating module root: %v", err)
		}
		dir = filepath.Join(root, "build", "firmware")
	}
	for _, b := range boards {
		for _, f := range []string{"elf", "bin", "hex"} {
			p := filepath.Join(dir, b.name, "fw."+f)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("test firmware %s missing (run make firmware, or set MS_TEST_FIRMWARE_DIR): %v", p, err)
			}
		}
	}
	return dir
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getwd: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// console collects everything QEMU writes to the guest UART.
type console struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
	done    chan struct{} // closed at EOF
}

func newConsole(r io.Reader) *console {
	c := &console{changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		chunk := make([]byte, 4096)
		for {
			n, err := r.Read(chunk)
			c.mu.Lock()
			c.buf.Write(chunk[:n])
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return c
}

// waitFor blocks until the output after offset from contains want, and
// returns the offset just past it.
func (c *console) waitFor(ctx context.Context, from int, want string) (int, error) {
	for {
		c.mu.Lock()
		out := c.buf.String()
		changed := c.changed
		c.mu.Unlock()
		if i := strings.Index(out[from:], want); i >= 0 {
			return from + i + len(want), nil
		}
		select {
		case <-changed:
		case <-c.done:
			return from, fmt.Errorf("console closed before %q; got %q", want, out)
		case <-ctx.Done():
			return from, fmt.Errorf("waiting for %q; got %q: %w", want, out, ctx.Err())
		}
	}
}

func TestFirmwareBootsEchoesAndExits(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-arm")
	if err != nil {
		t.Fatalf("qemu-system-arm is required (apt-get install qemu-system-arm): %v", err)
	}
	dir := firmwareDir(t)
	// Sequential on purpose: the machine has two cores.
	for _, b := range boards {
		for _, format := range []string{"elf", "bin", "hex"} {
			t.Run(b.name+"/"+format, func(t *testing.T) {
				runCase(t, qemu, b, loadArgs(dir, b, format))
			})
		}
	}
}

func runCase(t *testing.T, qemu string, b board, load []string) {
	ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
	defer cancel()

	args := append([]string{
		"-M", b.name, "-display", "none", "-monitor", "none",
		"-semihosting-config", "enable=on,target=native", "-serial", "stdio",
	}, load...)
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("stdin pipe: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	con := newConsole(stdout)
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-con.done
			_ = cmd.Wait()
			t.Logf("qemu stderr: %s", stderr.String())
		}
	}()

	pos, err := con.waitFor(ctx, 0, "MS-TEST-FW "+b.name+" ready\r\n")
	if err != nil {
		t.Fatalf("banner: %v", err)
	}
	if _, err := io.WriteString(stdin, "hi\r"); err != nil {
		t.Fatalf("writing to the UART: %v", err)
	}
	if pos, err = con.waitFor(ctx, pos, "hi\r"); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if _, err := io.WriteString(stdin, "count\r"); err != nil {
		t.Fatalf("writing to the UART: %v", err)
	}
	if _, err := con.waitFor(ctx, pos, "count\rcount="); err != nil {
		t.Fatalf("count command: %v", err)
	}
	if _, err := io.WriteString(stdin, "exit 7\r"); err != nil {
		t.Fatalf("writing to the UART: %v", err)
	}
	<-con.done // stdout must be drained before Wait closes it
	err = cmd.Wait()
	exited = true
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 7 {
		t.Fatalf("want exit status 7 from semihosting, got %v (ctx: %v); stderr: %s", err, ctx.Err(), stderr.String())
	}
}
