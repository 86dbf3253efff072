package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/runner/gdb"
)

const gdbUsage = `usage: msctl gdb SESSION [--listen ADDR]

Opens a local port that tunnels to the session's GDB stub over the server's
WebSocket (/api/v1/sessions/SESSION/stream/gdb), so gdb needs no open port in
the cluster; point gdb at it:
  gdb-multiarch fw.elf -ex 'target extended-remote ADDR'

  --listen ADDR   local address to listen on (default 127.0.0.1:3333)
  --token TOKEN   as --key; besides an API key (ms_...), sent as "Authorization:
                  ApiKey TOKEN", a JWT or a gdb session token (POST
                  /api/v1/sessions/SESSION/tokens {"purpose":"gdb"}), sent as
                  "Authorization: Bearer TOKEN"
`

// defaultGDBListen is where the tunnel listens unless told otherwise.
const defaultGDBListen = "127.0.0.1:3333"

func runGDB(ctx context.Context, e *env, args []string) error {
	fs := e.flags("gdb")
	listen := fs.String("listen", defaultGDBListen, "")
	pos, err := e.parse(fs, args, gdbUsage, 1, 1)
	if err != nil {
		return err
	}
	if pos[0] == "" {
		return &usageError{"gdb needs a SESSION", gdbUsage}
	}
	c, err := e.client()
	if err != nil {
		return &usageError{err.Error(), gdbUsage}
	}
	return tunnelGDB(ctx, c, pos[0], *listen, e.out, e.err)
}

// tunnelGDB listens on listen and carries each gdb connection to the
// session's gdb stream until ctx ends; hint gets the address to point gdb
// at (msctl gdb and msctl replay --gdb share it).
func tunnelGDB(ctx context.Context, c *client.Client, session, listen string, hint, stderr io.Writer) error {
	tunnel := c.WebSocketURL(client.Path("sessions", session, "stream", "gdb"))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(hint, "tunnelling %s to %s\nconnect with: gdb-multiarch fw.elf -ex 'target extended-remote %s'\n",
		ln.Addr(), tunnel, ln.Addr())
	serve(ctx, ln, tunnel, c.Header(), stderr)
	return nil
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
