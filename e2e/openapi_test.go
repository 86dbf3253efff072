package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/openapi"
	"github.com/machineserver/machineserver/shared/openapi/openapitest"
)

// TestOpenAPI serves the document without a credential in both forms (the
// standalone server, and the sessions function behind the gateway in the
// distributed form), then runs user paths through a proxy that checks each
// request the platform accepts and every answer against the document: the
// main session flow, the bad input users send (each error answer must be
// the documented error shape with a documented status), CloudEvents
// commands, snapshots, keys, tokens and the audit log, and a call of each
// operation those leave out.
func TestOpenAPI(t *testing.T) {
	want, err := openapi.Document()
	if err != nil {
		t.Fatal(err)
	}
	rec := &eventstest.Recorder{}
	sink := httptest.NewServer(rec)
	defer sink.Close()
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			pl := form.start(t, "K_SINK="+sink.URL)
			resp, err := plain.Get(pl.base + openapi.Path)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(got, want) {
				t.Fatalf("GET %s without a credential: %d %s, %d bytes (want the %d-byte document)",
					openapi.Path, resp.StatusCode, resp.Header.Get("Content-Type"), len(got), len(want))
			}
			if form.name != "standalone" {
				return
			}
			vpl, v := validating(t, pl)
			t.Run("lifecycle", func(t *testing.T) { lifecycle(t, vpl) })
			t.Run("bad-input", func(t *testing.T) { badInput(t, vpl) })
			t.Run("cloudevents", func(t *testing.T) { cloudEvents(t, vpl, rec) })
			t.Run("snapshots", func(t *testing.T) { snapshots(t, vpl) })
			t.Run("auth", func(t *testing.T) { authScenario(t, vpl) })
			t.Run("rest", func(t *testing.T) { restOfAPI(t, vpl) })
			v.report(t)
		})
	}
}

// restOfAPI calls the operations the scenarios above leave out, at least
// once each (an error answer is checked as well as a success).
func restOfAPI(t *testing.T, pl *platform) {
	const none = "0123456789abcdef"
	var rule struct{ ID string }
	for _, c := range []struct {
		status       int
		method, path string
		body, out    any
	}{
		{200, "GET", openapi.Path, nil, nil},
		{200, "GET", "/health", nil, nil},
		{200, "GET", "/metrics", nil, nil},
		{200, "GET", "/api/v1/quota", nil, nil},
		{200, "GET", "/api/v1/admin/tenants/default/quota", nil, nil},
		{200, "PUT", "/api/v1/admin/tenants/other/quota", `{"sessions":2,"jobs":-1}`, nil},
		{200, "GET", "/api/v1/snapshots?page_size=2", nil, nil},
		{200, "GET", "/api/v1/recordings", nil, nil},
		{404, "GET", "/api/v1/recordings/" + none, nil, nil},
		{404, "GET", "/api/v1/recordings/" + none + "/console", nil, nil},
		{404, "POST", "/api/v1/recordings/" + none + "/sessions", nil, nil},
		{404, "DELETE", "/api/v1/recordings/" + none, nil, nil},
		{200, "GET", "/api/v1/jobs?state=passed", nil, nil},
		{400, "GET", "/api/v1/jobs?state=bogus", nil, nil},
		{200, "GET", "/api/v1/jobs/stats", nil, nil},
		{422, "POST", "/api/v1/jobs", `{"program_id":"` + none + `","board_config":{"board":"netduino2"},"pass_pattern":"ok"}`, nil},
		{404, "GET", "/api/v1/jobs/" + none, nil, nil},
		{404, "GET", "/api/v1/jobs/" + none + "/console", nil, nil},
		{404, "DELETE", "/api/v1/jobs/" + none, nil, nil},
		{201, "POST", "/api/v1/jobs/rules", `{"prefix":"ci/","template":{"board_config":{"board":"netduino2"},"pass_pattern":"ok","uart_script":[{"wait_for":"ready","timeout":"2s"},{"send":"count\r"}]}}`, &rule},
		{200, "GET", "/api/v1/jobs/rules", nil, nil},
		{404, "POST", "/api/v1/sessions/" + none + "/coverage/start", nil, nil},
		{404, "POST", "/api/v1/sessions/" + none + "/coverage/stop", nil, nil},
		{404, "GET", "/api/v1/sessions/" + none + "/coverage?format=lcov", nil, nil},
		{400, "POST", "/api/v1/coverage/merge", `{}`, nil},
		{404, "GET", "/api/v1/coverage/reports/" + none, nil, nil},
		{404, "GET", "/api/v1/sessions/" + none + "/gdb", nil, nil},
		{200, "POST", "/api/v1/programs/notifications", `{"Event":"s3:TestEvent"}`, nil},
		{406, "GET", "/api/v1/stream/events?types=io.machineserver.session.", nil, nil},
	} {
		if code, body := pl.call(t, c.method, c.path, c.body, c.out); code != c.status {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, code, c.status, body)
		}
	}
	pl.must(t, 204, "DELETE", "/api/v1/jobs/rules/"+rule.ID, nil, nil)
	send(t, pl.events["snapshots"], "binary", events.TypeSnapshotDelete, events.SnapshotRef{SnapshotID: none}, 404, "", nil)
	send(t, pl.events["jobs"], "structured", events.TypeJobCreate, model.JobSpec{ProgramID: none, BoardConfig: model.BoardConfig{Board: "netduino2"}, PassPattern: "ok"}, 422, "", nil)

	// The event stream as server-sent events: the answer's head is checked.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", pl.base+"/api/v1/stream/events?after=0", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("event stream: %d", resp.StatusCode)
	}
}

// validator is a reverse proxy in front of a platform that checks traffic
// against the OpenAPI document: a request the platform accepted (2xx or an
// upgrade) must be one the document allows, and every answer must have a
// documented status, media type and body. (A refused request may be
// invalid on purpose; its answer is checked all the same.)
type validator struct {
	doc *openapitest.Doc

	mu    sync.Mutex
	errs  []string
	calls map[string]int // operationId: answers checked
}

type bodyKey struct{}

// validating returns pl behind a validator: the same platform, its base
// URL and CloudEvents URLs pointing at the proxy.
func validating(t *testing.T, pl *platform) (*platform, *validator) {
	v := &validator{doc: openapitest.Served(t), calls: map[string]int{}}
	target, _ := url.Parse(pl.base)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = v.check
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, body)))
	}))
	t.Cleanup(srv.Close)
	vpl := *pl
	vpl.base = srv.URL
	vpl.events = map[string]string{}
	for fn, u := range pl.events {
		vpl.events[fn] = strings.Replace(u, pl.base, srv.URL, 1)
	}
	return &vpl, v
}

func (v *validator) check(resp *http.Response) error {
	req := resp.Request
	where := req.Method + " " + req.URL.RequestURI()
	op, ok := v.doc.Find(req.Method, req.URL.Path)
	if !ok {
		v.fail("%s: no documented operation", where)
		return nil
	}
	var body []byte
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusSwitchingProtocols && mt != "text/event-stream" {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body, body = io.NopCloser(bytes.NewReader(b)), b
	}
	if resp.StatusCode < 300 {
		reqBody, _ := req.Context().Value(bodyKey{}).([]byte)
		if err := v.doc.CheckRequest(op, req, reqBody); err != nil {
			v.fail("%s (%s): request: %v", where, op.ID, err)
		}
	}
	if err := v.doc.CheckResponse(op, resp.StatusCode, resp.Header, body); err != nil {
		v.fail("%s (%s): answer: %v\n%.600s", where, op.ID, err, body)
	}
	v.mu.Lock()
	v.calls[op.ID]++
	v.mu.Unlock()
	return nil
}

func (v *validator) fail(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
}

// report fails t with every mismatch, and logs which operations the
// traffic checked.
func (v *validator) report(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		t.Errorf("OpenAPI: %s", e)
	}
	if len(v.calls) == 0 {
		t.Fatal("no request went through the OpenAPI validator")
	}
	var seen, unseen []string
	for _, op := range v.doc.Operations() {
		if n := v.calls[op.ID]; n > 0 {
			seen = append(seen, fmt.Sprintf("%s x%d", op.ID, n))
		} else {
			unseen = append(unseen, op.ID)
		}
	}
	slices.Sort(unseen)
	t.Logf("OpenAPI: checked %d operations: %s; not exercised: %s", len(seen), strings.Join(seen, ", "), strings.Join(unseen, ", "))
}
