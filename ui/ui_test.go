package ui

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/httpapi"
)

func serve(t *testing.T, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	mux := http.NewServeMux()
	httpapi.Mount(mux, Routes()...)
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Result()
}

// TestHandler checks what the browser is served: the page with its
// security headers, the script gzipped to a client that accepts it and
// revalidated by ETag, redirects to /ui/, and a JSON 404 for anything
// else. A binary built before the bundle (a fresh clone's go build) says
// so instead of serving a broken page.
func TestHandler(t *testing.T) {
	for _, p := range []string{"/", "/ui"} {
		if r := serve(t, "GET", p, nil); r.StatusCode != http.StatusFound || r.Header.Get("Location") != Prefix {
			t.Errorf("GET %s: %d to %q, want 302 to %s", p, r.StatusCode, r.Header.Get("Location"), Prefix)
		}
	}
	r := serve(t, "GET", "/ui/nope.js", nil)
	var e struct{ Error httpapi.Error }
	if err := json.NewDecoder(r.Body).Decode(&e); r.StatusCode != http.StatusNotFound || err != nil || e.Error.Code != "not_found" {
		t.Errorf("GET /ui/nope.js: %d %+v %v", r.StatusCode, e, err)
	}

	if !Built() {
		r := serve(t, "GET", Prefix, nil)
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "go run ./ui/build") {
			t.Fatalf("unbuilt UI: %d %s", r.StatusCode, body)
		}
		return
	}
	r = serve(t, "GET", Prefix, nil)
	page, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'self'") || !bytes.Contains(page, []byte(`src="app.js"`)) {
		t.Fatalf("GET /ui/: %d %v\n%s", r.StatusCode, r.Header, page)
	}

	plain := serve(t, "GET", "/ui/app.js", nil)
	js, _ := io.ReadAll(plain.Body)
	zr := serve(t, "GET", "/ui/app.js", map[string]string{"Accept-Encoding": "br, gzip"})
	z, _ := io.ReadAll(zr.Body)
	if zr.Header.Get("Content-Encoding") != "gzip" || len(z) >= len(js)/2 {
		t.Fatalf("gzip: encoding %q, %d bytes of %d", zr.Header.Get("Content-Encoding"), len(z), len(js))
	}
	gr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	if unz, _ := io.ReadAll(gr); !bytes.Equal(unz, js) || !strings.HasPrefix(plain.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("gzipped script differs from the plain one, or type %q", plain.Header.Get("Content-Type"))
	}
	if serve(t, "GET", "/ui/app.js", map[string]string{"Accept-Encoding": "gzip;q=0"}).Header.Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refused it")
	}
	for _, c := range []*http.Response{plain, zr} {
		etag := c.Header.Get("ETag")
		again := serve(t, "GET", "/ui/app.js", map[string]string{"If-None-Match": etag, "Accept-Encoding": c.Header.Get("Content-Encoding")})
		if etag == "" || again.StatusCode != http.StatusNotModified || c.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("revalidating %q: %d (cache-control %q)", etag, again.StatusCode, c.Header.Get("Cache-Control"))
		}
	}
	if plain.Header.Get("ETag") == zr.Header.Get("ETag") {
		t.Error("the plain and gzipped script share an ETag")
	}
}
