package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/term"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

const consoleUsage = `usage: msctl console SESSION [--port uartN] [--offset N|end] [--linger DUR]

Attaches to the session's UART over WS /api/v1/sessions/SESSION/stream/console,
from the oldest byte kept (--offset end: new output only). On a terminal it is a
raw serial terminal: every key goes to the board (Ctrl-C too), Ctrl-] leaves.
Otherwise stdin goes to the UART and the UART's output to stdout; after stdin
ends, output is still printed for --linger (default 1s; negative: until
interrupted or the session is deleted).
`

// ctrlBracket (Ctrl-]) leaves an interactive console, as in telnet.
const ctrlBracket = 0x1d

var errLeave = errors.New("left the console")

func runConsole(ctx context.Context, e *env, args []string) error {
	fs := e.flags("console")
	port := fs.String("port", "", "")
	offset := fs.String("offset", "", "")
	linger := fs.Duration("linger", time.Second, "")
	pos, c, err := e.connect(fs, args, consoleUsage, 1, 1)
	if err != nil {
		return err
	}
	path := client.Query(client.Path("sessions", pos[0], "stream", "console"), url.Values{"port": {*port}, "offset": {*offset}})
	ws, err := c.Dial(ctx, path)
	if err != nil {
		return err
	}
	defer ws.CloseNow()

	stdin, raw := e.in.(*os.File)
	raw = raw && isTerminal(stdin)
	nl := "\n"
	if raw {
		old, err := term.MakeRaw(int(stdin.Fd()))
		if err != nil {
			return fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(int(stdin.Fd()), old)
		// The terminal no longer turns \n into \r\n.
		nl = "\r\n"
		fmt.Fprintf(e.err, "Connected to session %s (%s). Ctrl-] leaves.%s", pos[0], first(*port, "uart0"), nl)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	outDone := make(chan error, 1)
	go func() { outDone <- consoleOutput(ctx, ws, e.out, e.err, nl) }()
	inDone := make(chan error, 1)
	go func() { inDone <- consoleInput(ctx, ws, e.in, raw) }()

	select {
	case err := <-outDone:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case err := <-inDone:
		if errors.Is(err, errLeave) {
			fmt.Fprint(e.err, nl)
			ws.Close(websocket.StatusNormalClosure, "")
			return nil
		}
		if err != nil {
			return err
		}
	}
	// stdin ended (a pipe): what the board still prints is shown for a while.
	var wait <-chan time.Time
	if *linger >= 0 {
		t := time.NewTimer(*linger)
		defer t.Stop()
		wait = t.C
	}
	select {
	case err := <-outDone:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-wait:
	}
	ws.Close(websocket.StatusNormalClosure, "")
	return nil
}

// consoleOutput copies the UART's output (binary frames) to out; text
// frames are the server's notes (input dropped) and go to errw. It returns
// when the stream ends: why is the error.
func consoleOutput(ctx context.Context, ws *websocket.Conn, out, errw io.Writer, nl string) error {
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("console closed by the server: %s", first(ce.Reason, ce.Code.String()))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("console: %w", err)
		}
		if typ == websocket.MessageText {
			fmt.Fprintf(errw, "%smsctl: %s%s", nl, bytes.TrimSpace(data), nl)
			continue
		}
		if _, err := out.Write(data); err != nil {
			return err
		}
	}
}

// consoleInput sends in to the UART as it is read, until in ends (nil) or,
// on a terminal, until Ctrl-] (errLeave).
func consoleInput(ctx context.Context, ws *websocket.Conn, in io.Reader, raw bool) error {
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		chunk, leave := buf[:n], false
		if raw {
			if i := bytes.IndexByte(chunk, ctrlBracket); i >= 0 {
				chunk, leave = chunk[:i], true
			}
		}
		if len(chunk) > 0 {
			if werr := ws.Write(ctx, websocket.MessageBinary, chunk); werr != nil {
				return fmt.Errorf("console input: %w", werr)
			}
		}
		if leave {
			return errLeave
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
