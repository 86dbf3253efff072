package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/shared/testenv"
)

// TestAuth runs the platform with authentication on (the default) in both
// forms: requests without or with bad credentials are refused with a
// reason, keys work until revoked, and session tokens open only their own
// session's console or gdb stream.
func TestAuth(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { authScenario(t, form.start(t)) })
	}
}

// plain is a client that adds no credentials (the package's default
// client adds the admin key).
var plain = &http.Client{}

// as sends a request with the Authorization header h (none when empty).
func (pl *platform) as(t *testing.T, h, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, pl.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h != "" {
		req.Header.Set("Authorization", h)
	}
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func authScenario(t *testing.T, pl *platform) {
	// No credentials, a made-up key: 401 with the reason.
	for h, reason := range map[string]string{
		"":                                 "missing credentials",
		"ApiKey ms_guess_" + randomHex(20): "unknown key",
		"Bearer not.a.jwt":                 "JWT authentication is not configured",
	} {
		code, body := pl.as(t, h, "GET", "/api/v1/sessions", nil)
		if code != 401 || !strings.Contains(string(body), reason) {
			t.Fatalf("%q: %d %s, want 401 %q", h, code, body, reason)
		}
	}
	// /health stays open.
	if code, _ := pl.as(t, "", "GET", "/health", nil); code != 200 {
		t.Fatalf("/health: %d", code)
	}

	// An admin makes a key for tenant acme; it works, and sees only acme.
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "e2e", "tenant": "acme", "scopes": []string{"read", "write", "debug"}}, &created)
	acme := "ApiKey " + created.Key
	var theirs map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "default-tenant", "board_config": map[string]string{"board": "netduino2"}}, &theirs)
	if code, body := pl.as(t, acme, "GET", "/api/v1/sessions/"+theirs["id"].(string), nil); code != 404 {
		t.Fatalf("another tenant's session: %d %s", code, body)
	}
	if code, body := pl.as(t, acme, "GET", "/api/v1/admin/keys", nil); code != 403 || !strings.Contains(string(body), `\"admin\" scope`) {
		t.Fatalf("admin API with a debug key: %d %s", code, body)
	}

	// A running session of acme.
	fw := firmware(t, "netduino2", "fw.elf")
	prog := uploadAs(t, pl, acme, fw)
	mk := func(name string) string {
		code, body := pl.as(t, acme, "POST", "/api/v1/sessions", map[string]any{"name": name, "board_config": map[string]string{"board": "netduino2"}})
		if code != 201 {
			t.Fatalf("create: %d %s", code, body)
		}
		return decode(t, body)["id"].(string)
	}
	id, other := mk("mine"), mk("other")
	for _, step := range []struct {
		path string
		body any
	}{{"/program", map[string]string{"program_id": prog}}, {"/poweron", nil}} {
		if code, body := pl.as(t, acme, "POST", "/api/v1/sessions/"+id+step.path, step.body); code != 200 {
			t.Fatalf("%s: %d %s", step.path, code, body)
		}
	}

	// A console token opens this session's console stream as ?token=, as a
	// browser would, and nothing else.
	token := func(sid, purpose, ttl string) string {
		code, body := pl.as(t, acme, "POST", "/api/v1/sessions/"+sid+"/tokens", map[string]string{"purpose": purpose, "ttl": ttl})
		if code != 201 {
			t.Fatalf("token: %d %s", code, body)
		}
		return decode(t, body)["token"].(string)
	}
	con := token(id, "console", "5m")
	ws := strings.Replace(pl.base, "http", "ws", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, ws+"/api/v1/sessions/"+id+"/stream/console?token="+con, &websocket.DialOptions{HTTPClient: plain})
	if err != nil {
		t.Fatalf("console with its token: %v", err)
	}
	var seen strings.Builder
	for !strings.Contains(seen.String(), "ready") {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("console read: %v (so far %q)", err, seen.String())
		}
		seen.Write(b)
	}
	c.Close(websocket.StatusNormalClosure, "")
	for name, path := range map[string]string{
		"another session": "/api/v1/sessions/" + other + "/stream/console?token=" + con,
		"another purpose": "/api/v1/sessions/" + id + "/stream/gdb?token=" + con,
		"not a stream":    "/api/v1/sessions/" + id + "?token=" + con,
	} {
		_, resp, err := websocket.Dial(ctx, ws+path, &websocket.DialOptions{HTTPClient: plain})
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("console token on %s: %v %v", name, resp, err)
		}
	}
	if code, body := pl.as(t, "Bearer "+con, "GET", "/api/v1/sessions", nil); code != 401 {
		t.Errorf("console token as an API credential: %d %s", code, body)
	}
	short := token(id, "console", "1s")
	time.Sleep(1500 * time.Millisecond)
	if code, body := pl.as(t, "", "GET", "/api/v1/sessions/"+id+"/stream/console?token="+short, nil); code != 401 || !strings.Contains(string(body), "token expired") {
		t.Errorf("expired token: %d %s", code, body)
	}

	// A gdb token carries msctl's tunnel to the real gdb.
	local := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startProc(t, "msctl", []string{"MS_SERVER=" + pl.base}, "gdb", id, "--listen", local, "--token", token(id, "gdb", "5m"))
	waitListening(t, local)
	out, err := gdbtest.GDB(context.Background(), t, local, "print counter", "detach")
	if !strings.Contains(out, "$1 = ") || !strings.Contains(out, "detached") {
		t.Fatalf("gdb with a gdb token (err %v):\n%s", err, out)
	}
	// A console token cannot open the gdb tunnel.
	local2 := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startProc(t, "msctl", []string{"MS_SERVER=" + pl.base}, "gdb", id, "--listen", local2, "--token", con)
	waitListening(t, local2)
	if out, _ := gdbtest.GDB(context.Background(), t, local2, "print counter"); !strings.Contains(out, "401") {
		t.Errorf("gdb with a console token was not refused:\n%s", out)
	}

	if code, body := pl.as(t, acme, "POST", "/api/v1/sessions/"+id+"/poweroff", nil); code != 200 {
		t.Fatalf("poweroff: %d %s", code, body)
	}

	// Revoked: refused from then on.
	pl.must(t, 200, "DELETE", "/api/v1/admin/keys/"+created.ID, nil, nil)
	if code, body := pl.as(t, acme, "GET", "/api/v1/sessions", nil); code != 401 || !strings.Contains(string(body), "revoked key") {
		t.Fatalf("revoked key: %d %s", code, body)
	}

	// The audit log has the attach, the mutations and the refusals.
	var log struct {
		Records []struct {
			Actor, Tenant, Action, Resource, Error string
			Result                                 int
		}
	}
	pl.must(t, 200, "GET", "/api/v1/audit?actor=key:"+created.ID+"&limit=1000", nil, &log)
	want := map[string]bool{}
	for _, r := range log.Records {
		if r.Tenant != "acme" {
			t.Errorf("record of tenant %q: %+v", r.Tenant, r)
		}
		switch {
		case r.Action == "GET /api/v1/sessions/{id}/stream/console" && r.Resource == id && r.Result == 101:
			want["console attach"] = true
		case r.Action == "GET /api/v1/sessions/{id}/stream/gdb" && r.Resource == id && r.Result == 101:
			want["gdb attach"] = true
		case r.Action == "POST /api/v1/sessions/{id}/poweron" && r.Result == 200:
			want["poweron"] = true
		case r.Result == 401 && r.Error == "revoked key":
			want["revoked"] = true
		case r.Action == "GET /api/v1/admin/keys" && r.Result == 403:
			want["forbidden"] = true
		}
	}
	if len(want) != 5 {
		t.Errorf("audit records found %v of console attach, gdb attach, poweron, revoked, forbidden:\n%+v", want, log.Records)
	}
}

func uploadAs(t *testing.T, pl *platform, h, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("name", "fw")
	mw.WriteField("format", "elf")
	fw, _ := mw.CreateFormFile("file", "fw.elf")
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", pl.base+"/api/v1/programs", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", h)
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	return decode(t, b)["id"].(string)
}
