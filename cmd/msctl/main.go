// Command msctl is the Machine Server command line. Today it has one
// command: gdb, which tunnels a local TCP port to a session's debugger
// endpoint over WebSocket, so gdb needs no open port in the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/machineserver/machineserver/runner/gdb"
)

const usage = `usage: msctl gdb SESSION [--listen ADDR] [--server URL] [--token TOKEN]

Commands:
  gdb    open a local port that tunnels to the session's GDB stub over the
         server's WebSocket (/api/v1/sessions/SESSION/stream/gdb); point
         gdb at the port: gdb-multiarch fw.elf -ex 'target extended-remote ADDR'

Flags:
  --listen ADDR   local address to listen on (default 127.0.0.1:3333)
  --server URL    Machine Server base URL (default $MS_SERVER or http://localhost:8080)
  --token TOKEN   credentials (default $MS_TOKEN): an API key (ms_...), sent as
                  "Authorization: ApiKey TOKEN", or a JWT or a gdb session token
                  (POST /api/v1/sessions/SESSION/tokens {"purpose":"gdb"}), sent as
                  "Authorization: Bearer TOKEN"
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "msctl:", err)
		os.Exit(1)
	}
}

// run is msctl without the process: it returns when ctx ends or on a usage
// or listen error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "gdb":
		return runGDB(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func runGDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gdb", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:3333", "")
	server := fs.String("server", envOr("MS_SERVER", "http://localhost:8080"), "")
	token := fs.String("token", os.Getenv("MS_TOKEN"), "")
	// Flags may come before or after SESSION.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, usage)
				return nil
			}
			return fmt.Errorf("%w\n%s", err, usage)
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 || pos[0] == "" {
		return fmt.Errorf("gdb needs exactly one SESSION\n%s", usage)
	}
	tunnel, err := tunnelURL(*server, pos[0])
	if err != nil {
		return err
	}
	header := http.Header{}
	if *token != "" {
		header.Set("Authorization", authorization(*token))
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tunnelling %s to %s\nconnect with: gdb-multiarch fw.elf -ex 'target extended-remote %s'\n",
		ln.Addr(), tunnel, ln.Addr())
	serve(ctx, ln, tunnel, header, stderr)
	return nil
}

// authorization is the header value for token: API keys have their own
// scheme, everything else is a bearer token.
func authorization(token string) string {
	if strings.HasPrefix(token, "ms_") {
		return "ApiKey " + token
	}
	return "Bearer " + token
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// tunnelURL is the session's gdb stream on server, as ws:// or wss://.
func tunnelURL(server, session string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("--server: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("--server %q: want an http:// or https:// URL", server)
	}
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/sessions/" + session + "/stream/gdb"
	u.RawPath = base + "/api/v1/sessions/" + url.PathEscape(session) + "/stream/gdb"
	return u.String(), nil
}

// serve gives each local connection its own tunnel until ctx ends, then
// cuts them all. When the tunnel cannot open (no such session, bad token,
// server down), gdb is refused with the reason, so it shows it.
func serve(ctx context.Context, ln net.Listener, tunnel string, header http.Header, stderr io.Writer) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		track(c, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer track(c, false)
			defer c.Close()
			fmt.Fprintf(stderr, "msctl: debugger connected from %s\n", c.RemoteAddr())
			dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			remote, err := gdb.DialTunnel(dctx, tunnel, header)
			cancel()
			if err != nil {
				fmt.Fprintf(stderr, "msctl: %v\n", err)
				gdb.Refuse(c, "msctl: "+err.Error())
				return
			}
			track(remote, true)
			defer track(remote, false)
			gdb.Pipe(c, remote)
			fmt.Fprintf(stderr, "msctl: debugger from %s disconnected\n", c.RemoteAddr())
		}()
	}
	wg.Wait()
}
