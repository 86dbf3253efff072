package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// hermetic keeps the user's environment and config out of a test: msctl
// reads only what the test gives it.
func hermetic(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	for _, v := range []string{"MS_SERVER", "MS_API_KEY", "MS_TOKEN"} {
		t.Setenv(v, "")
	}
	return dir
}

// result is one msctl run.
type result struct {
	code           int
	stdout, stderr string
}

func msctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errw strings.Builder
	code := run(context.Background(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errw})
	return result{code, out.String(), errw.String()}
}

// api is a fake Machine Server: its routes answer only with the key
// "ms_good", as the real one does with the error JSON.
func api(t *testing.T, routes map[string]http.HandlerFunc) *httptest.Server {
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "ApiKey ms_good" {
				httpapi.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": httpapi.Error{Code: "unauthenticated", Message: "unknown API key"}})
				return
			}
			h(w, r)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func reply(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, http.StatusOK, v) }
}

var quota = reply(map[string]any{"tenant": "default"})

func TestLoginStoresConfig(t *testing.T) {
	dir := hermetic(t)
	var mu sync.Mutex
	var hits []string
	list := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits = append(hits, name)
			mu.Unlock()
			httpapi.WriteJSON(w, 200, map[string]any{"programs": []model.Program{{ID: "p-" + name, Name: "fw.elf"}}, "total": 1})
		}
	}
	a := api(t, map[string]http.HandlerFunc{"GET /api/v1/quota": quota, "GET /api/v1/programs": list("a")})
	b := api(t, map[string]http.HandlerFunc{"GET /api/v1/programs": list("b")})

	if r := msctl(t, "", "login", "--server", a.URL, "--key", "ms_bad"); r.code != 1 || r.stderr != "msctl: login to "+a.URL+": unknown API key\n" {
		t.Fatalf("login with a wrong key: %+v", r)
	}
	cfg := filepath.Join(dir, "machineserver", "config.json")
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Fatalf("a refused login stored the config: %v", err)
	}
	// The key from stdin, as a script would pipe it.
	r := msctl(t, "ms_good\n", "login", "--server", a.URL)
	if r.code != 0 || !strings.Contains(r.stdout, "as tenant default") {
		t.Fatalf("login: %+v", r)
	}
	st, err := os.Stat(cfg)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}
	var c config
	data, _ := os.ReadFile(cfg)
	if json.Unmarshal(data, &c) != nil || c != (config{Server: a.URL, APIKey: "ms_good"}) {
		t.Fatalf("config file holds %s", data)
	}

	// Later commands need neither flag; the environment and flags override.
	if r := msctl(t, "", "programs", "ls"); r.code != 0 || !strings.Contains(r.stdout, "p-a") {
		t.Fatalf("programs ls with the stored config: %+v", r)
	}
	t.Setenv("MS_SERVER", b.URL)
	if r := msctl(t, "", "programs", "ls"); r.code != 0 || !strings.Contains(r.stdout, "p-b") {
		t.Fatalf("programs ls with MS_SERVER: %+v", r)
	}
	if r := msctl(t, "", "programs", "ls", "--server", a.URL); r.code != 0 || !strings.Contains(r.stdout, "p-a") {
		t.Fatalf("programs ls with --server: %+v", r)
	}
	t.Setenv("MS_API_KEY", "ms_other")
	if r := msctl(t, "", "programs", "ls"); r.code != 1 || r.stderr != "msctl: unknown API key\n" {
		t.Fatalf("MS_API_KEY overrides the stored key: %+v", r)
	}
	if r := msctl(t, "", "--key", "ms_good", "programs", "ls"); r.code != 0 {
		t.Fatalf("--key before the command: %+v", r)
	}
	if len(hits) != 4 {
		t.Fatalf("list calls %v", hits)
	}
}

func TestErrorsAndUsage(t *testing.T) {
	hermetic(t)
	srv := api(t, map[string]http.HandlerFunc{
		"GET /api/v1/sessions/{id}": func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteError(w, r, httpapi.NotFound("session %s not found", r.PathValue("id")))
		},
		"POST /api/v1/sessions/{id}/poweron": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "upstream down\n")
		},
	})
	key := []string{"--server", srv.URL, "--key", "ms_good"}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"sessions", "get", "nope"}, 1, "msctl: session nope not found\n"},
		{[]string{"sessions", "poweron", "s1"}, 1, "msctl: POST /api/v1/sessions/s1/poweron: server answered 502 Bad Gateway: upstream down\n"},
		{[]string{}, exitUsage, "msctl: missing command\n"},
		{[]string{"frobnicate"}, exitUsage, `msctl: unknown command "frobnicate"`},
		{[]string{"sessions"}, exitUsage, "msctl: missing subcommand"},
		{[]string{"sessions", "boot"}, exitUsage, `msctl: unknown subcommand "boot"`},
		{[]string{"sessions", "get"}, exitUsage, "msctl: sessions get needs exactly one argument"},
		{[]string{"sessions", "create"}, exitUsage, "msctl: sessions create needs --board"},
		{[]string{"programs", "ls", "--output", "yaml"}, exitUsage, `msctl: --output "yaml": want text or json`},
		{[]string{"run", "fw.elf"}, exitUsage, "msctl: run needs --board"},
		{[]string{"run", "fw.elf", "--board", "netduino2", "--timeout", "soon"}, exitUsage, `msctl: --timeout "soon": want a duration`},
		{[]string{"coverage", "s1", "--format", "xml"}, exitUsage, `msctl: --format "xml": want lcov, json, html or counts`},
		{[]string{"console"}, exitUsage, "msctl: console needs exactly one argument"},
		{[]string{"events", "--bogus"}, exitUsage, "msctl: flag provided but not defined: -bogus"},
	} {
		r := msctl(t, "", append(tc.args, key...)...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, tc.stderr) {
			t.Errorf("msctl %q: exit %d, stderr %q; want %d, %q", tc.args, r.code, r.stderr, tc.code, tc.stderr)
		}
		if tc.code == exitUsage && !strings.Contains(r.stderr, "usage: msctl") {
			t.Errorf("msctl %q: no usage in %q", tc.args, r.stderr)
		}
	}
	// Nothing listens there: a plain error, exit 1.
	if r := msctl(t, "", "sessions", "ls", "--server", "http://127.0.0.1:1", "--key", "ms_good"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("server down: %+v", r)
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"run", "--help"}, {"sessions", "--help"}, {"snapshots", "ls", "-h"}} {
		if r := msctl(t, "", args...); r.code != 0 || !strings.Contains(r.stdout, "usage: msctl") || r.stderr != "" {
			t.Errorf("msctl %q: %+v", args, r)
		}
	}
}

func TestResourcesAndJSON(t *testing.T) {
	hermetic(t)
	var mu sync.Mutex
	var uploaded map[string]string
	var created map[string]any
	sess := model.Session{ID: "s1", Name: "msctl-netduino2", Machine: "netduino2", State: model.StateCreated}
	srv := api(t, map[string]http.HandlerFunc{
		"POST /api/v1/programs": func(w http.ResponseWriter, r *http.Request) {
			f, h, err := r.FormFile("file")
			if err != nil {
				httpapi.WriteError(w, r, httpapi.BadRequest("file is required"))
				return
			}
			data, _ := io.ReadAll(f)
			mu.Lock()
			uploaded = map[string]string{"name": r.FormValue("name"), "format": r.FormValue("format"), "filename": h.Filename, "data": string(data)}
			mu.Unlock()
			httpapi.WriteJSON(w, 201, model.Program{ID: "p1", Name: r.FormValue("name")})
		},
		"GET /api/v1/sessions": func(w http.ResponseWriter, r *http.Request) {
			// Two pages: ls reads them all.
			if r.URL.Query().Get("page") == "1" {
				httpapi.WriteJSON(w, 200, map[string]any{"sessions": []model.Session{sess}, "total": 2})
				return
			}
			httpapi.WriteJSON(w, 200, map[string]any{"sessions": []model.Session{{ID: "s2", State: model.StateRunning}}, "total": 2})
		},
		"POST /api/v1/sessions": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			json.NewDecoder(r.Body).Decode(&created)
			mu.Unlock()
			httpapi.WriteJSON(w, 201, sess)
		},
		"POST /api/v1/sessions/{id}/program": func(w http.ResponseWriter, r *http.Request) {
			s := sess
			s.ProgramID = "p1"
			httpapi.WriteJSON(w, 200, s)
		},
		"POST /api/v1/sessions/{id}/poweron": func(w http.ResponseWriter, r *http.Request) {
			s := sess
			s.State = model.StateRunning
			if r.URL.Query().Get("halted") != "true" {
				s.Reason = "not halted"
			}
			httpapi.WriteJSON(w, 200, s)
		},
		"DELETE /api/v1/snapshots/{sid}": func(w http.ResponseWriter, r *http.Request) {
			if r.PathValue("sid") != "snap1" {
				httpapi.WriteError(w, r, httpapi.NotFound("snapshot %s not found", r.PathValue("sid")))
				return
			}
			w.WriteHeader(204)
		},
		"GET /api/v1/sessions/{id}/coverage": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "TN:\nSF:/src/main.c\nformat="+r.URL.Query().Get("format")+" include="+r.URL.Query().Get("include")+"\nend_of_record\n")
		},
	})
	key := []string{"--server", srv.URL, "--key", "ms_good"}
	fw := filepath.Join(t.TempDir(), "fw.elf")
	os.WriteFile(fw, []byte("\x7fELF image"), 0o644)

	if r := msctl(t, "", append([]string{"programs", "upload", fw}, key...)...); r.code != 0 || r.stdout != "p1\n" {
		t.Fatalf("programs upload: %+v", r)
	}
	if uploaded["name"] != "fw.elf" || uploaded["format"] != "elf" || uploaded["filename"] != "fw.elf" || uploaded["data"] != "\x7fELF image" {
		t.Fatalf("uploaded %v", uploaded)
	}
	r := msctl(t, "", append([]string{"sessions", "create", "--board", "netduino2", "--program", "p1", "--coverage", "--output", "json"}, key...)...)
	var s model.Session
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &s) != nil || s.ProgramID != "p1" {
		t.Fatalf("sessions create --output json: %+v", r)
	}
	if created["name"] != "msctl-netduino2" || created["coverage"] != true || created["board_config"].(map[string]any)["board"] != "netduino2" {
		t.Fatalf("create request %v", created)
	}
	r = msctl(t, "", append([]string{"sessions", "ls", "--output", "json"}, key...)...)
	var ss []model.Session
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ss) != nil || len(ss) != 2 || ss[1].ID != "s2" {
		t.Fatalf("sessions ls --output json: %+v", r)
	}
	if r := msctl(t, "", append([]string{"sessions", "ls"}, key...)...); r.code != 0 || !strings.HasPrefix(r.stdout, "ID ") || !strings.Contains(r.stdout, "s2") {
		t.Fatalf("sessions ls: %+v", r)
	}
	if r := msctl(t, "", append([]string{"sessions", "poweron", "s1", "--halted"}, key...)...); r.code != 0 || r.stdout != "s1 running\n" {
		t.Fatalf("sessions poweron --halted: %+v", r)
	}
	r = msctl(t, "", append([]string{"snapshots", "rm", "snap1", "snap2", "--output", "json"}, key...)...)
	if r.code != 1 || r.stderr != "msctl: snapshot snap2 not found\n" || !strings.Contains(r.stdout, `"snap1"`) {
		t.Fatalf("snapshots rm of one that exists and one that does not: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "cov.info")
	r = msctl(t, "", append([]string{"coverage", "s1", "-o", out, "--all", "--output", "json"}, key...)...)
	lcov, _ := os.ReadFile(out)
	if r.code != 0 || !strings.Contains(string(lcov), "format=lcov include=all") || !strings.Contains(r.stdout, `"bytes"`) {
		t.Fatalf("coverage -o: %+v, file %q", r, lcov)
	}
}
