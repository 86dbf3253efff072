package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestConsolePorts drives a board's second UART through the console stream
// (?port=uart1) on a real QEMU: the test firmware echoes on it, uart0 keeps
// the console, and a port the board lacks is refused with a 400 naming the
// ports it has.
func TestConsolePorts(t *testing.T) {
	pl := startStandalone(t)
	pid := uploadID(t, pl, "mps2-an385")
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "ports", "board_config": map[string]string{"board": "mps2-an385"}}, &s)
	id := s["id"].(string)
	defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": pid}, nil)
	console := pl.dialConsole(t, id, "")
	uart1 := pl.dialConsole(t, id, "?port=uart1")
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	console.waitFor(t, "MS-TEST-FW mps2-an385 ready", 1)
	uart1.send(t, "ping1\r")
	uart1.waitFor(t, "ping1", 1)
	if strings.Contains(console.String(), "ping1") {
		t.Fatalf("uart1's echo reached the console: %q", console.String())
	}

	// The same port over plain HTTP: input in, its history out, and the
	// first UART's history without it.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console?port=uart1", []byte("http1\r"), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := pl.call(t, "GET", "/api/v1/sessions/"+id+"/console?port=uart1", nil, nil)
		if code == 200 && strings.Contains(string(body), "ping1") && strings.Contains(string(body), "http1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uart1's history over HTTP: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := pl.call(t, "GET", "/api/v1/sessions/"+id+"/console", nil, nil); code != 200 || strings.Contains(string(body), "http1") {
		t.Fatalf("uart0's history: %d %q", code, body)
	}
	if code, body := pl.call(t, "POST", "/api/v1/sessions/"+id+"/console?port=uart7", []byte("x"), nil); code != 400 || !strings.Contains(string(body), "uart1 (") {
		t.Fatalf("input to uart7: %d %s", code, body)
	}

	u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/sessions/" + id + "/stream/console?port=uart7"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("port uart7: %v %v", resp, err)
	}
	refusal, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(refusal), "its ports are uart0 (") || !strings.Contains(string(refusal), "uart1 (") {
		t.Fatalf("port uart7 refused without naming the board's ports: %s", refusal)
	}
}
