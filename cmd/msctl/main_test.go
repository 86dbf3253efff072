package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
)

// server stands in for the sessions function: session "s1" is served by e,
// with token "secret"; anything else is the API's 404.
func server(t *testing.T, e *gdb.Endpoint) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/sessions/{id}/stream/gdb", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthenticated","message":"token missing or wrong"}}`)
			return
		}
		if r.PathValue("id") != "s1" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"not_found","message":"session `+r.PathValue("id")+` not found"}}`)
			return
		}
		e.ServeWebSocket(w, r, "ws "+r.RemoteAddr)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// start runs msctl with args until the test ends and returns the local
// address from its hint line.
func start(t *testing.T, args ...string) string {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, args, stdio{in: strings.NewReader(""), out: pw, err: io.Discard})
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("msctl exited with %d", code)
		}
	})
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "connect with: gdb-multiarch fw.elf -ex 'target extended-remote "); ok {
			go io.Copy(io.Discard, pr)
			return strings.TrimSuffix(rest, "'")
		}
	}
	t.Fatalf("msctl printed no hint; it exited with %d", <-done)
	return ""
}

func endpoint(t *testing.T, m *gdbtest.Machine) *gdb.Endpoint {
	e := gdb.New(slog.New(slog.NewTextHandler(t.Output(), nil)))
	e.SetStub(m.Stub)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestDebugThroughTunnel(t *testing.T) {
	m := gdbtest.Start(t)
	srv := server(t, endpoint(t, m))
	// Flags after the session, server from the environment.
	t.Setenv("MS_SERVER", srv.URL)
	addr := start(t, "gdb", "s1", "--listen", "127.0.0.1:0", "--token", "secret")
	gdbtest.Debug(t, m, addr)
}

func TestTunnelRefusals(t *testing.T) {
	m := gdbtest.Start(t)
	e := endpoint(t, m)
	srv := server(t, e)
	for _, tc := range []struct {
		name, session, token, stub, want string
	}{
		{"missing session", "nope", "secret", m.Stub, "E.msctl: gdb tunnel: server answered 404 Not Found: session nope not found"},
		{"wrong token", "s1", "guess", m.Stub, "E.msctl: gdb tunnel: server answered 401 Unauthorized: token missing or wrong"},
		{"machine off", "s1", "secret", "", "E.machineserver: the session's emulator is not running; power it on first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.SetStub(tc.stub)
			addr := start(t, "gdb", "--server", srv.URL, "--token", tc.token, "--listen", "127.0.0.1:0", tc.session)
			out, _ := gdbtest.GDB(context.Background(), t, addr, "info registers pc")
			if !strings.Contains(out, tc.want) {
				t.Fatalf("gdb does not show %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestGDBUsage(t *testing.T) {
	var out strings.Builder
	if code := run(context.Background(), []string{"gdb", "--help"}, stdio{out: &out, err: io.Discard}); code != 0 || !strings.Contains(out.String(), "usage: msctl gdb SESSION") {
		t.Fatalf("gdb --help: %d\n%s", code, out.String())
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"gdb"}, exitUsage},
		{[]string{"gdb", "a", "b"}, exitUsage},
		{[]string{"gdb", "s1", "--server", "ftp://example.com"}, exitUsage},
		{[]string{"gdb", "s1", "--bogus"}, exitUsage},
		{[]string{"gdb", "s1", "--listen", "256.0.0.1:1"}, 1},
	} {
		if code := run(context.Background(), tc.args, stdio{out: io.Discard, err: io.Discard}); code != tc.code {
			t.Errorf("msctl %q: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}
