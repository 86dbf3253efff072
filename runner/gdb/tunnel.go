package gdb

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// pingEvery keeps an idle tunnel (a user reading code with gdb stopped) from
// being dropped by proxies with idle timeouts on the way.
const pingEvery = 30 * time.Second

// ServeWebSocket upgrades the request and carries the raw RSP byte stream in
// binary frames both ways, through ServeConn. Authenticate before calling it;
// a refusal (busy, machine off) reaches the debugger as RSP, not as HTTP.
func (e *Endpoint) ServeWebSocket(w http.ResponseWriter, r *http.Request, who string) {
	// Credentials are tokens, never cookies, so a cross-origin page gains
	// nothing; and behind the sessions function's proxy Origin never matches.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		keepAlive(ctx, ws)
	}()
	_ = e.ServeConn(ctx, wsConn{websocket.NetConn(ctx, ws, websocket.MessageBinary), ws}, who)
	cancel()
	<-pinged
}

func keepAlive(ctx context.Context, ws *websocket.Conn) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pingEvery)
		err := ws.Ping(pctx)
		cancel()
		if err != nil {
			ws.CloseNow()
			return
		}
	}
}

// wsConn lets Endpoint.Close skip the close handshake (see abort).
type wsConn struct {
	net.Conn
	ws *websocket.Conn
}

func (c wsConn) CloseNow() error { return c.ws.CloseNow() }

// DialTunnel opens the WebSocket tunnel at url (ws, wss, http or https) and
// returns it as a byte stream; ctx bounds only the dial. header carries
// credentials (Authorization). When the server refuses the upgrade, the
// error has its status and the message of its JSON error body.
func DialTunnel(ctx context.Context, url string, header http.Header) (net.Conn, error) {
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("gdb tunnel: server answered %s: %s", resp.Status, errorMessage(resp.Body))
		}
		return nil, fmt.Errorf("gdb tunnel: %w", err)
	}
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// errorMessage is the message of the API's {"error":{"message"}} body, or
// the body itself.
func errorMessage(body io.Reader) string {
	if body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(body, 1024))
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return strings.TrimSpace(string(b))
}
