package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a service may take to answer. It is a safety
// net against a hung service, not a measurement, so it is generous.
const startTimeout = 60 * time.Second

// startAttempts covers the race between FreePort closing its listener and the
// service binding the port: if the service exits early, we retry on a new port.
const startAttempts = 3

// errExited says the service died before it was ready.
var errExited = errors.New("exited before it was ready")

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return port
}

// freePort picks a port below the kernel's ephemeral range when there is
// room: a port from that range, freed by a server a test restarts, can be
// taken meanwhile by any process's outgoing connection, and the restarted
// server then fails with "address already in use" (seen once in a full
// run). Below the range only another listener can take it.
func freePort() (int, error) {
	if lo := ephemeralStart(); lo > portFloor+1000 {
		for range 100 {
			port := portFloor + mrand.IntN(lo-portFloor)
			if l, err := net.Listen("tcp", fmt.Sprintf(":%d", port)); err == nil {
				l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFloor keeps freePort's picks clear of the well-known and the commonly
// configured ports.
const portFloor = 20000

// ephemeralStart is the first port of the kernel's ephemeral range, 0 when
// unknown.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	lo, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\t")
	n, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return 0
	}
	return n
}

// Binary finds a binary on PATH, in $GOBIN or in $(go env GOPATH)/bin (where
// `go install` puts versitygw), or fails the test.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := FindBinary(name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// FindBinary is Binary for callers without a testing.TB.
func FindBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 2 {
			dirs = append(dirs, lines[0])
			for _, gp := range filepath.SplitList(lines[1]) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
	}
	dirs = append(dirs, os.Getenv("GOBIN"))
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in $GOBIN or in $(go env GOPATH)/bin; run `make test`, which installs the tools the tests need", name)
}

// proc is a running service.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *syncBuffer
	dir     string // removed on stop
	done    chan struct{}
	waitErr error // valid once done is closed
	once    sync.Once
}

// startProc starts bin in dir with stdout and stderr captured. env nil means
// our own environment.
func startProc(name, bin string, args, env []string, dir string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	// If the service leaves a child holding the output pipe, Wait would
	// block on it forever; the service itself is dead by then.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, dir: dir, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop kills the service, reaps it and removes its directory. SIGKILL is
// enough: nothing the services hold outlives the test.
func (p *proc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.done
		os.RemoveAll(p.dir)
	})
}

// waitReady polls ready until it succeeds, the service exits (errExited) or
// startTimeout passes.
func (p *proc) waitReady(ready func(context.Context) error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s %w (%v); its output:\n%s", p.name, errExited, p.waitErr, p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v; its output:\n%s", p.name, startTimeout, err, p.out)
		}
	}
}

// start runs launch up to startAttempts times while the service keeps dying
// early, which is what losing the port race looks like.
func start[T any](launch func() (*proc, T, error)) (*proc, T, error) {
	var (
		p   *proc
		v   T
		err error
	)
	for range startAttempts {
		p, v, err = launch()
		if !errors.Is(err, errExited) {
			break
		}
	}
	return p, v, err
}

// cleanup ties p to t, showing the service's output if the test failed.
func cleanup(t testing.TB, p *proc) {
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("testenv: %s output:\n%s", p.name, p.out)
		}
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// syncBuffer collects output written by exec's copying goroutines while a
// test may read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
