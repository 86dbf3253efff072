package openapi_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/openapi"
	"github.com/machineserver/machineserver/shared/openapi/openapitest"
)

// TestDocumentLints checks the served document's structure (openapitest.Lint).
func TestDocumentLints(t *testing.T) {
	for _, err := range openapitest.Served(t).Lint() {
		t.Error(err)
	}
}

// TestLintRejects proves Lint has teeth: each case breaks one rule of a
// copy of the document.
func TestLintRejects(t *testing.T) {
	b, err := openapi.Document()
	if err != nil {
		t.Fatal(err)
	}
	type obj = map[string]any
	op := func(d obj, path, method string) obj {
		return d["paths"].(obj)[path].(obj)[method].(obj)
	}
	for _, c := range []struct {
		name, want string
		mutate     func(d obj)
	}{
		{"version 3.0", `want 3.1.x`, func(d obj) { d["openapi"] = "3.0.3" }},
		{"dangling ref", `does not resolve`, func(d obj) {
			op(d, "/api/v1/sessions", "post")["requestBody"].(obj)["content"].(obj)["application/json"].(obj)["schema"] = obj{"$ref": "#/components/schemas/NoSuch"}
		}},
		{"undeclared path parameter", `{id} is not declared`, func(d obj) {
			delete(d["paths"].(obj)["/api/v1/jobs/{id}"].(obj), "parameters")
		}},
		{"parameter not in the path", `declared but not in the path`, func(d obj) {
			op(d, "/api/v1/sessions", "get")["parameters"] = []any{obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}}
		}},
		{"duplicate operationId", `operationId "getSession" is also`, func(d obj) { op(d, "/api/v1/jobs/{id}", "get")["operationId"] = "getSession" }},
		{"error answer of another shape", `must be application/json with schema`, func(d obj) {
			op(d, "/api/v1/sessions/{id}", "get")["responses"].(obj)["404"] = obj{"description": "gone", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}
		}},
		{"unknown security scheme", `security scheme "Cookie" is not defined`, func(d obj) {
			op(d, "/api/v1/quota", "get")["security"] = []any{obj{"Cookie": []any{}}}
		}},
		{"schema that does not compile", `schema at`, func(d obj) {
			d["components"].(obj)["schemas"].(obj)["Tenant"] = obj{"type": "strin"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d obj
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			c.mutate(d)
			mb, _ := json.Marshal(d)
			doc, err := openapitest.Load(mb)
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for _, err := range doc.Lint() {
				all = append(all, err.Error())
			}
			if !strings.Contains(strings.Join(all, "\n"), c.want) {
				t.Errorf("Lint did not report %q; it reported:\n%s", c.want, strings.Join(all, "\n"))
			}
		})
	}
}

// TestEventSchemasBundled checks every event schema is in the document
// under its name, with no reference left to a file of the catalog.
func TestEventSchemasBundled(t *testing.T) {
	b, err := openapi.Document()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("{\n  \"openapi\": \"3.1.0\"")) {
		t.Errorf("the served document does not keep openapi.json's order: %.60s", b)
	}
	var d struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(events.Schemas, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no event schemas: %v", err)
	}
	for _, n := range names {
		s, ok := d.Components.Schemas[openapi.EventSchemaPrefix+strings.TrimSuffix(n, ".json")]
		if !ok {
			t.Errorf("%s is not bundled", n)
			continue
		}
		if fileRef.Match(s) || bytes.Contains(s, []byte(`"$id"`)) {
			t.Errorf("%s keeps a reference to a file or its $id: %s", n, s)
		}
	}
}

// fileRef is a $ref to anything but a pointer into the document.
var fileRef = regexp.MustCompile(`"\$ref":\s*"[^#]`)

// TestCheckIsStrict shows the request and answer checks the e2e tests rely
// on fail on what the document does not allow.
func TestCheckIsStrict(t *testing.T) {
	d := openapitest.Served(t)
	op, ok := d.Find("GET", "/api/v1/sessions/0123456789abcdef")
	if !ok || op.ID != "getSession" {
		t.Fatalf("Find = %+v, %v", op, ok)
	}
	if o, _ := d.Find("GET", "/api/v1/jobs/stats"); o.ID != "getJobStats" {
		t.Errorf("the literal /api/v1/jobs/stats lost to the template: %s", o.ID)
	}
	session := `{"id":"0123456789abcdef","tenant":"default","name":"s","backend":"qemu","board_config":{"board":"netduino2"},
		"machine":"netduino2","state":"created","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`
	js := http.Header{"Content-Type": {"application/json"}}
	if err := d.CheckResponse(op, 200, js, []byte(session)); err != nil {
		t.Fatalf("a valid session fails: %v", err)
	}
	for _, c := range []struct {
		name   string
		status int
		h      http.Header
		body   string
	}{
		{"unknown field", 200, js, strings.Replace(session, `"name"`, `"colour":"red","name"`, 1)},
		{"missing field", 200, js, strings.Replace(session, `"machine":"netduino2",`, ``, 1)},
		{"bad state", 200, js, strings.Replace(session, `"created"`, `"paused"`, 1)},
		{"bad time", 200, js, strings.Replace(session, `2026-01-02T03:04:05Z`, `yesterday`, 1)},
		{"undocumented status", 418, js, session},
		{"undocumented media type", 200, http.Header{"Content-Type": {"text/html"}}, session},
		{"error of another shape", 404, js, `{"error":"not found"}`},
	} {
		if err := d.CheckResponse(op, c.status, c.h, []byte(c.body)); err == nil {
			t.Errorf("%s: CheckResponse accepted it", c.name)
		}
	}
	list, _ := d.Find("GET", "/api/v1/sessions")
	if err := d.CheckRequest(list, httptest.NewRequest("GET", "/api/v1/sessions?page=2&page_size=5", nil), nil); err != nil {
		t.Errorf("a valid page: %v", err)
	}
	if err := d.CheckRequest(list, httptest.NewRequest("GET", "/api/v1/sessions?page=0", nil), nil); err == nil {
		t.Error("CheckRequest accepted page=0")
	}
	post, _ := d.Find("POST", "/api/v1/sessions")
	req := httptest.NewRequest("POST", "/api/v1/sessions?debug=1", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/json")
	if err := d.CheckRequest(post, req, []byte(`{"name":"x","board_config":{"board":"netduino2"},"colour":"red"}`)); err == nil ||
		!strings.Contains(err.Error(), "debug") || !strings.Contains(err.Error(), "colour") {
		t.Errorf("CheckRequest = %v, want the undocumented query parameter and the unknown field", err)
	}
}

// TestRoute serves the document publicly as JSON.
func TestRoute(t *testing.T) {
	rt := openapi.Route()
	if rt.Method != "GET" || rt.Pattern != openapi.Path || rt.Scope != "public" {
		t.Fatalf("route %s %s scope %s", rt.Method, rt.Pattern, rt.Scope)
	}
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest("GET", openapi.Path, nil))
	want, _ := openapi.Document()
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || !bytes.Equal(w.Body.Bytes(), want) {
		t.Errorf("GET %s: %d %s, %d bytes (want %d)", openapi.Path, w.Code, w.Header().Get("Content-Type"), w.Body.Len(), len(want))
	}
}
