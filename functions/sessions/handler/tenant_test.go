package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
	"github.com/machineserver/machineserver/shared/testenv"
)

func as(tenant string) context.Context {
	return auth.WithPrincipal(context.Background(), auth.Principal{Actor: "key:" + tenant, Tenant: tenant, Scopes: []auth.Scope{auth.ScopeAdmin}})
}

// api serves h's routes behind a stand-in for the auth middleware: the
// principal's tenant comes from the X-Test-Tenant header (none: no principal).
type api struct {
	t   *testing.T
	srv *httptest.Server
}

func serve(t *testing.T, h *Handler) *api {
	mux := http.NewServeMux()
	httpapi.Mount(mux, h.Routes()...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tn := r.Header.Get("X-Test-Tenant"); tn != "" {
			r = r.WithContext(as(tn))
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &api{t: t, srv: srv}
}

func (a *api) call(tenant, method, path, body string) (int, string) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Test-Tenant", tenant)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stream dials a WebSocket stream and returns its first message, or the
// HTTP status that refused the upgrade.
func (a *api) stream(tenant, path string) (string, int) {
	a.t.Helper()
	ctx := context.Background()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.srv.URL, "http")+path,
		&websocket.DialOptions{HTTPHeader: http.Header{"X-Test-Tenant": {tenant}}})
	if err != nil {
		if resp == nil {
			a.t.Fatalf("dial %s: %v", path, err)
		}
		return "", resp.StatusCode
	}
	defer c.CloseNow()
	_, b, err := c.Read(ctx)
	if err != nil {
		a.t.Fatalf("read %s: %v", path, err)
	}
	return string(b), http.StatusSwitchingProtocols
}

func (f *fakeRunner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func putProgram(t *testing.T, st *state.Store, tenant string) model.Program {
	p := model.Program{ID: model.NewID(), Tenant: tenant, Format: model.FormatBIN, Size: 64, SHA256: strings.Repeat("c", 64), Segments: []model.Segment{{Addr: 0, Size: 64}}}
	if err := st.PutProgram(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every session route, both streams and every coverage route answer tenant
// b exactly as they answer an id that does not exist, and never act on
// tenant a's session.
func TestTenantIsolationEveryRoute(t *testing.T) {
	h, st, f := setup(t)
	fs, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h.d.Blobs = fs
	*h = *New(h.d) // the use cases keep the deps they were built with
	a := serve(t, h)
	ctxA := as("a")

	p := putProgram(t, st, "a")
	s, err := h.Create(ctxA, CreateRequest{Name: "a's", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	if err != nil || s.Tenant != "a" {
		t.Fatalf("create: %+v %v", s, err)
	}
	if _, err := h.LoadProgram(ctxA, s.ID, LoadRequest{ProgramID: p.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PowerOn(ctxA, s.ID, false); err != nil {
		t.Fatal(err)
	}
	rep, err := h.StoreReport(ctxA, p.ID, report.Counts{}, []string{s.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}

	id := s.ID
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/sessions/" + id, ""},
		{"POST", "/api/v1/sessions/" + id + "/program", `{"program_id":"` + p.ID + `"}`},
		{"POST", "/api/v1/sessions/" + id + "/poweroff", ""},
		{"POST", "/api/v1/sessions/" + id + "/poweron", ""},
		{"POST", "/api/v1/sessions/" + id + "/reset", ""},
		{"GET", "/api/v1/sessions/" + id + "/console", ""},
		{"POST", "/api/v1/sessions/" + id + "/console", "typed"},
		{"GET", "/api/v1/sessions/" + id + "/gdb", ""},
		{"GET", "/api/v1/sessions/" + id + "/stream/console", ""},
		{"GET", "/api/v1/sessions/" + id + "/stream/gdb", ""},
		{"POST", "/api/v1/sessions/" + id + "/coverage/start", ""},
		{"GET", "/api/v1/sessions/" + id + "/coverage", ""},
		{"POST", "/api/v1/sessions/" + id + "/coverage/stop", ""},
		{"POST", "/api/v1/coverage/merge", `{"session_ids":["` + id + `"]}`},
		{"POST", "/api/v1/coverage/merge", `{"report_ids":["` + rep.ID + `"]}`},
		{"GET", "/api/v1/coverage/reports/" + rep.ID, ""},
		{"GET", "/api/v1/coverage/reports/" + rep.ID + "?format=counts", ""},
		{"DELETE", "/api/v1/sessions/" + id, ""},
	}
	foreign := make([]string, len(routes))
	for i, r := range routes {
		before := f.count()
		code, body := a.call("b", r.method, r.path, r.body)
		if code != 404 || !strings.Contains(body, `"not_found"`) {
			t.Errorf("b: %s %s: %d %s", r.method, r.path, code, body)
		}
		if f.count() != before {
			t.Errorf("b: %s %s reached the runner: %s", r.method, r.path, f.last())
		}
		foreign[i] = body
	}
	// Both streams, as real WebSocket clients.
	for _, kind := range []string{"console", "gdb"} {
		if _, code := a.stream("b", "/api/v1/sessions/"+id+"/stream/"+kind); code != 404 {
			t.Errorf("b: %s stream: %d", kind, code)
		}
		if msg, _ := a.stream("a", "/api/v1/sessions/"+id+"/stream/"+kind); msg != "stream "+kind {
			t.Errorf("a: %s stream: %q", kind, msg)
		}
	}
	// The owner reaches every route (the stream routes without an upgrade
	// are the runner's answer, not a 404).
	for _, r := range routes[:len(routes)-1] {
		if code, body := a.call("a", r.method, r.path, r.body); code == 404 {
			t.Errorf("a: %s %s: %d %s", r.method, r.path, code, body)
		}
	}
	if code, _ := a.call("a", "GET", "/api/v1/sessions/"+id, ""); code != 200 {
		t.Fatal("b's delete removed a's session")
	}
	// Once the session and report are really gone, b gets byte for byte what
	// it got while they existed: nothing tells the two apart.
	if code, _ := a.call("a", "DELETE", "/api/v1/sessions/"+id, ""); code != 204 {
		t.Fatalf("a's delete: %d", code)
	}
	if err := fs.Remove(context.Background(), "coverage/"+rep.ID+"/manifest.json"); err != nil {
		t.Fatal(err)
	}
	for i, r := range routes {
		if code, body := a.call("b", r.method, r.path, r.body); code != 404 || body != foreign[i] {
			t.Errorf("%s %s: unknown id %d %s, foreign id %s", r.method, r.path, code, body, foreign[i])
		}
	}
}

// The methods other functions call (snapshots, jobs) take the tenant from ctx.
func TestTenantFromContext(t *testing.T) {
	h, st, _ := setup(t)
	ctxA, ctxB := as("a"), as("b")
	sa, _ := h.Create(ctxA, CreateRequest{Name: "a", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	sb, _ := h.Create(ctxB, CreateRequest{Name: "b", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	sd, _ := h.Create(context.Background(), CreateRequest{Name: "d", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	if sa.Tenant != "a" || sb.Tenant != "b" || sd.Tenant != auth.DefaultTenant {
		t.Fatalf("tenants %q %q %q", sa.Tenant, sb.Tenant, sd.Tenant)
	}
	ops := map[string]func(context.Context, string) error{
		"Get":           func(ctx context.Context, id string) error { _, err := h.Get(ctx, id); return err },
		"Delete":        func(ctx context.Context, id string) error { _, err := h.Delete(ctx, id); return err },
		"PowerOn":       func(ctx context.Context, id string) error { _, err := h.PowerOn(ctx, id, false); return err },
		"PowerOff":      func(ctx context.Context, id string) error { _, err := h.PowerOff(ctx, id); return err },
		"Reset":         func(ctx context.Context, id string) error { _, err := h.Reset(ctx, id); return err },
		"GDB":           func(ctx context.Context, id string) error { _, err := h.GDB(ctx, id, "http://x"); return err },
		"CoverageStart": func(ctx context.Context, id string) error { _, err := h.CoverageStart(ctx, id); return err },
		"CoverageStop":  func(ctx context.Context, id string) error { _, err := h.CoverageStop(ctx, id); return err },
		"LoadProgram": func(ctx context.Context, id string) error {
			_, err := h.LoadProgram(ctx, id, LoadRequest{ProgramID: "0123456789abcdef"})
			return err
		},
	}
	for name, op := range ops {
		for _, c := range []struct {
			ctx context.Context
			id  string
		}{{ctxB, sa.ID}, {ctxA, sb.ID}, {ctxA, sd.ID}, {context.Background(), sa.ID}} {
			err := op(c.ctx, c.id)
			he := httpapi.AsError(err)
			if he == nil || he.Status != 404 || he.Message != "session "+c.id+" not found" {
				t.Errorf("%s of %s as %s: %v", name, c.id, auth.Tenant(c.ctx), err)
			}
		}
	}
	// A program of another tenant reads exactly like a missing one.
	pb := putProgram(t, st, "b")
	_, foreign := h.LoadProgram(ctxA, sa.ID, LoadRequest{ProgramID: pb.ID})
	_, viaProgram := h.Program(ctxA, sa, pb.ID)
	if status(foreign) != 404 || foreign.Error() != "not_found: program "+pb.ID+" not found; upload it with POST /api/v1/programs" || viaProgram.Error() != foreign.Error() {
		t.Fatalf("foreign program: %v / %v", foreign, viaProgram)
	}
	st.DeleteProgram(context.Background(), pb.ID)
	if _, missing := h.LoadProgram(ctxA, sa.ID, LoadRequest{ProgramID: pb.ID}); missing.Error() != foreign.Error() {
		t.Fatalf("missing %v, foreign %v", missing, foreign)
	}
	// b's own program loads into b's session.
	pb = putProgram(t, st, "b")
	if s, err := h.LoadProgram(ctxB, sb.ID, LoadRequest{ProgramID: pb.ID}); err != nil || s.ProgramID != pb.ID {
		t.Fatalf("own program: %v", err)
	}
	// Programs and sessions from before tenants belong to the default tenant.
	legacy := putProgram(t, st, "")
	if _, err := h.LoadProgram(context.Background(), sd.ID, LoadRequest{ProgramID: legacy.ID}); err != nil {
		t.Fatalf("legacy program: %v", err)
	}
}

// List pages over the caller's sessions only, with that tenant's total.
func TestListPerTenant(t *testing.T) {
	h, _, _ := setup(t)
	a := serve(t, h)
	ctxA, ctxB := as("a"), as("b")
	var mine []string
	for i := range 5 {
		s, err := h.Create(ctxA, CreateRequest{Name: fmt.Sprint("a", i), BoardConfig: model.BoardConfig{Board: "netduino2"}})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, s.ID)
		if i%2 == 0 {
			h.Create(ctxB, CreateRequest{Name: fmt.Sprint("b", i), BoardConfig: model.BoardConfig{Board: "netduino2"}})
		}
	}
	var got []string
	for page := 1; page <= 3; page++ {
		l, err := h.List(ctxA, page, 2)
		if err != nil || l.Total != 5 || len(l.Sessions) != min(2, 5-2*(page-1)) {
			t.Fatalf("page %d: %d of %d, %v", page, len(l.Sessions), l.Total, err)
		}
		for _, s := range l.Sessions {
			got = append(got, s.ID)
		}
	}
	if strings.Join(got, ",") != strings.Join(mine, ",") {
		t.Fatalf("a's pages %v, want %v", got, mine)
	}
	if l, _ := h.List(ctxB, 1, 20); l.Total != 3 || len(l.Sessions) != 3 || l.Sessions[0].Tenant != "b" {
		t.Fatalf("b: %+v", l)
	}
	if l, _ := h.List(context.Background(), 1, 20); l.Total != 0 || len(l.Sessions) != 0 {
		t.Fatalf("default: %+v", l)
	}
	// Over HTTP, with a deleted session gone from its tenant's total.
	h.Delete(ctxA, mine[0])
	code, body := a.call("a", "GET", "/api/v1/sessions?page=2&page_size=3", "")
	var l List
	json.Unmarshal([]byte(body), &l)
	if code != 200 || l.Total != 4 || len(l.Sessions) != 1 || l.Sessions[0].ID != mine[4] {
		t.Fatalf("http: %d %s", code, body)
	}
}

func withQuota(h *Handler, st *state.Store, sessions int64) {
	h.d.Quota = st.Quota(quota.Config{Sessions: sessions, StorageBytes: 1 << 30, Jobs: 4})
	*h = *New(h.d) // the use cases keep the deps they were built with
}

func TestSessionQuota(t *testing.T) {
	h, st, _ := setup(t)
	withQuota(h, st, 2)
	a := serve(t, h)
	ctxA := as("a")
	board := CreateRequest{Name: "q", BoardConfig: model.BoardConfig{Board: "netduino2"}}
	var ids []string
	for range 2 {
		s, err := h.Create(ctxA, board)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	_, err := h.Create(ctxA, board)
	want := "quota exceeded: sessions 2/2 for tenant a; delete a session or ask an admin to raise the limit"
	if status(err) != 429 || !errors.Is(err, quota.ErrExceeded) || !strings.Contains(err.Error(), want) {
		t.Fatalf("3rd: %v", err)
	}
	code, body := a.call("a", "POST", "/api/v1/sessions", `{"name":"q","board_config":{"board":"netduino2"}}`)
	if code != 429 || !strings.Contains(body, `"quota_exceeded"`) || !strings.Contains(body, want) {
		t.Fatalf("http 3rd: %d %s", code, body)
	}
	// A refused create stores nothing.
	if l, _ := h.List(ctxA, 1, 20); l.Total != 2 {
		t.Fatalf("sessions after refusals: %d", l.Total)
	}
	// Another tenant has its own slots.
	if _, err := h.Create(as("b"), board); err != nil {
		t.Fatalf("b: %v", err)
	}
	// Delete gives the slot back, once.
	if _, err := h.Delete(ctxA, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Delete(ctxA, ids[0]); status(err) != 404 {
		t.Fatalf("double delete: %v", err)
	}
	if u, _ := h.d.Quota.Usage(ctxA, "a"); u.Sessions.Used != 1 {
		t.Fatalf("used after delete: %+v", u.Sessions)
	}
	if _, err := h.Create(ctxA, board); err != nil {
		t.Fatalf("after delete: %v", err)
	}
	// An operator raises a's limit; the quota routes are mounted with the sessions routes.
	if code, body := a.call("default", "PUT", "/api/v1/admin/tenants/a/quota", `{"sessions":3}`); code != 200 {
		t.Fatalf("override: %d %s", code, body)
	}
	if _, err := h.Create(ctxA, board); err != nil {
		t.Fatalf("raised: %v", err)
	}
	if _, err := h.Create(ctxA, board); status(err) != 429 || !strings.Contains(err.Error(), "sessions 3/3") {
		t.Fatalf("raised limit reached: %v", err)
	}
	code, body = a.call("a", "GET", "/api/v1/quota", "")
	var u quota.Usage
	json.Unmarshal([]byte(body), &u)
	if code != 200 || u.Tenant != "a" || u.Sessions != (quota.Item{Limit: 3, Used: 3, Source: "override"}) {
		t.Fatalf("own quota: %d %s", code, body)
	}
}

// Ten concurrent creates for three free slots on the real redis-server:
// exactly three sessions exist afterwards.
func TestConcurrentCreatesRespectQuota(t *testing.T) {
	st, err := state.Open(context.Background(), testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := setupStore(t, st)
	withQuota(h, st, 3)
	ctxA := as("a")
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, refused := 0, 0
	start := make(chan struct{})
	for range 10 {
		wg.Go(func() {
			<-start
			_, err := h.Create(ctxA, CreateRequest{Name: "race", BoardConfig: model.BoardConfig{Board: "netduino2"}})
			mu.Lock()
			defer mu.Unlock()
			switch status(err) {
			case 0:
				if err != nil {
					t.Error(err)
				}
				won++
			case 429:
				refused++
			default:
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	l, _ := h.List(ctxA, 1, 20)
	if won != 3 || refused != 7 || l.Total != 3 {
		t.Fatalf("won %d, refused %d, stored %d", won, refused, l.Total)
	}
}

// Reconcile recounts slots from the stored sessions and indexes sessions
// stored before the per-tenant index.
func TestReconcile(t *testing.T) {
	h, st, _ := setup(t)
	withQuota(h, st, 5)
	ctx := context.Background()
	ctxA := as("a")
	for range 2 {
		h.Create(ctxA, CreateRequest{Name: "r", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	}
	// A crash between acquire and store, and an index from before tenants.
	h.d.Quota.Acquire(ctx, "a", quota.Sessions, "00000000deadbeef", 1)
	testenv.RawRedis(t, st.Addr()).Del(ctx, "ms:sessions-of-tenant:a")
	if l, _ := h.List(ctxA, 1, 20); l.Total != 0 {
		t.Fatalf("index not dropped: %d", l.Total)
	}
	if err := h.Reconcile(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if u, _ := h.d.Quota.Usage(ctx, "a"); u.Sessions.Used != 2 {
		t.Fatalf("used %d", u.Sessions.Used)
	}
	if l, _ := h.List(ctxA, 1, 20); l.Total != 2 {
		t.Fatalf("reindexed %d", l.Total)
	}
}
