package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// dist is the bundle; all: keeps the committed dist/.keep matching, so
// this builds before the bundle exists.
//
//go:embed all:dist
var dist embed.FS

// Prefix is where the UI is served.
const Prefix = "/ui/"

// Routes are the UI's routes: its files under /ui/, and / and /ui sending
// a browser there. They are public: the page holds no data, and every API
// call it makes carries the credential the user signs in with. (The mux's
// own /ui redirect would have no declared scope, so the authenticator
// would refuse it.)
func Routes() []httpapi.Route {
	toUI := func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Prefix, http.StatusFound) }
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: Prefix, Scope: httpapi.ScopePublic, Handler: Handler().ServeHTTP},
		{Method: http.MethodGet, Pattern: strings.TrimSuffix(Prefix, "/"), Scope: httpapi.ScopePublic, Handler: toUI},
		{Method: http.MethodGet, Pattern: "/{$}", Scope: httpapi.ScopePublic, Handler: toUI},
	}
}

type file struct {
	body, gz []byte
	etag     string
	ctype    string
}

// files reads the bundle once; the gzip forms are made here rather than
// per request (the JavaScript shrinks to about a quarter).
var files = sync.OnceValue(func() map[string]file {
	out := map[string]file{}
	fs.WalkDir(dist, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		b, err := dist.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		f := file{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: mime.TypeByExtension(path.Ext(p))}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		if z.Len() < len(b) {
			f.gz = z.Bytes()
		}
		out[strings.TrimPrefix(p, "dist/")] = f
		return nil
	})
	return out
})

// Built reports whether the bundle is in this binary.
func Built() bool { _, ok := files()["index.html"]; return ok }

// Handler serves the bundle under Prefix. Every answer is revalidated (no-cache
// with an ETag of the content), so a new binary's UI is never mixed with
// an old cached script, and an unchanged one costs a 304.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		f, ok := files()[name]
		if !ok {
			if name == "index.html" {
				notBuilt(w)
				return
			}
			httpapi.WriteError(w, r, httpapi.NotFound("%s is not a file of the web UI", r.URL.Path))
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Vary", "Accept-Encoding")
		if name == "index.html" {
			// Scripts, styles and API calls from this origin only; xterm.js
			// sets inline styles; the coverage viewer shows the report's
			// own HTML in a sandboxed srcdoc frame.
			h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
			h.Set("Referrer-Policy", "no-referrer")
		}
		body, etag := f.body, f.etag
		if f.gz != nil && acceptsGzip(r) {
			body, etag = f.gz, strings.TrimSuffix(f.etag, `"`)+`-gz"`
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("ETag", etag)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(body))
	})
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

func notBuilt(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write([]byte(`<!doctype html><meta charset="utf-8"><title>Machine Server</title>
<p>The web UI is not in this binary: it was built before the UI bundle.
Build with <code>make build</code> (it runs <code>go run ./ui/build</code> first), or run
<code>go run ./ui/build</code> and build again.</p>
`))
}
