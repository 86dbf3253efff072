package runnerapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// A proxied request's error is the runner's: it reaches the request's
// Outcome (for the audit log), and the client still gets the runner's body.
func TestProxyReportsRunnerError(t *testing.T) {
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.Conflict("session s1 is not running"))
	}))
	defer runner.Close()
	c, err := NewClient(runner.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	ctx, out := httpapi.WithOutcome(t.Context())
	w := httptest.NewRecorder()
	c.Proxy("/sessions/s1/stream/console").ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/sessions/s1/stream/console", nil).WithContext(ctx))
	body, _ := io.ReadAll(w.Result().Body)
	if w.Code != 409 || out.Err == nil || out.Err.Status != 409 || out.Err.Message != "session s1 is not running" {
		t.Fatalf("status %d, outcome %+v", w.Code, out.Err)
	}
	want := "{\n  \"error\": {\n    \"code\": \"conflict\",\n    \"message\": \"session s1 is not running\"\n  }\n}\n"
	if string(body) != want {
		t.Fatalf("client body %q, want the runner's %q", body, want)
	}
}
