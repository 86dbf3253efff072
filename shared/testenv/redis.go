package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Redis starts a redis-server for the test and returns its URL
// ("redis://127.0.0.1:PORT/0") once it answers PING. It is stopped when the
// test ends.
func Redis(t testing.TB) string {
	t.Helper()
	bin := Binary(t, "redis-server")
	p, url, err := start(func() (*proc, string, error) { return startRedis(bin) })
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cleanup(t, p)
	return url
}

// StartRedis is Redis for TestMain: the caller runs stop when done.
func StartRedis() (url string, stop func(), err error) {
	bin, err := FindBinary("redis-server")
	if err != nil {
		return "", nil, err
	}
	p, url, err := start(func() (*proc, string, error) { return startRedis(bin) })
	if err != nil {
		return "", nil, err
	}
	return url, p.stop, nil
}

func startRedis(bin string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "testenv-redis-")
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := startProc("redis-server", bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
	}, nil, dir)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitReady(func(ctx context.Context) error { return ping(ctx, addr) }); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, "redis://" + addr + "/0", nil
}

// ping speaks just enough RESP to see "+PONG"; a loading server answers
// "-LOADING", which is not ready yet.
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
