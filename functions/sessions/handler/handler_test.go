package handler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// fakeRunner is a scripted runner: it records internal API calls and answers
// with what the test set. The real runner is exercised by the e2e tests.
type fakeRunner struct {
	mu     sync.Mutex
	calls  []string
	bodies []runnerapi.StartRequest
	status int
	st     *state.Store
	// crash is the reason a start records instead of running.
	crash string
	// failOn fails the calls whose path contains it.
	failOn string
}

func (f *fakeRunner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, kind, ok := strings.Cut(r.URL.Path, "/stream/"); ok && r.Header.Get("Authorization") == "Bearer tok" {
		// A stream says which one it is and closes.
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Write(r.Context(), websocket.MessageBinary, []byte("stream "+kind))
		c.Close(websocket.StatusNormalClosure, "")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" {
		w.WriteHeader(401)
		return
	}
	f.calls = append(f.calls, r.Method+" "+strings.TrimPrefix(r.URL.Path, runnerapi.Prefix))
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/coverage") {
		report.Counts{}.WriteTo(w)
		return
	}
	var req runnerapi.StartRequest
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		json.Unmarshal(b, &req)
		f.bodies = append(f.bodies, req)
	}
	if f.failOn != "" && strings.Contains(r.URL.Path, f.failOn) {
		httpapi.WriteError(w, r, httpapi.Errorf(429, "capacity", "scripted failure of %s", r.URL.Path))
		return
	}
	if f.status != 0 {
		httpapi.WriteError(w, r, httpapi.Errorf(f.status, "scripted", "scripted failure"))
		return
	}
	if strings.HasSuffix(r.URL.Path, "/start") {
		// The real runner records the running state itself (or the error
		// of a guest that crashed QEMU at once).
		id := strings.Split(r.URL.Path, "/")[4]
		f.st.UpdateSession(r.Context(), id, func(s *model.Session) error {
			s.State = model.StateRunning
			if f.crash != "" {
				s.State, s.Reason = model.StateError, f.crash
			}
			return nil
		})
	}
	httpapi.WriteJSON(w, 200, runnerapi.Status{})
}

func (f *fakeRunner) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func setup(t *testing.T) (*Handler, *state.Store, *fakeRunner) {
	st, err := state.OpenEmbedded(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return setupStore(t, st)
}

// setupStore is setup on a given store (the real redis-server for races).
func setupStore(t *testing.T, st *state.Store) (*Handler, *state.Store, *fakeRunner) {
	ctx := context.Background()
	t.Cleanup(func() { st.Close() })
	f := &fakeRunner{st: st}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	var machines []string
	for _, k := range board.Known {
		machines = append(machines, k.Name)
	}
	caps := board.Build("7.2.0", "qemu-system-arm", machines, []string{"cortex-m3", "cortex-m4"}, nil)
	if err := st.RegisterRunner(ctx, state.Runner{ID: "r1", URL: srv.URL, Capacity: 4, Capabilities: caps}, time.Minute); err != nil {
		t.Fatal(err)
	}
	blobs, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := New(Deps{State: st, Blobs: blobs, Publisher: events.Nop, RunnerToken: "tok", Log: slog.New(slog.DiscardHandler)})
	return h, st, f
}

func status(err error) int {
	e := httpapi.AsError(err)
	if e != nil {
		return e.Status
	}
	return 0
}

func TestCreateResolvesSeed(t *testing.T) {
	h, _, _ := setup(t)
	var in CreateRequest
	json.Unmarshal([]byte(`{"name":"my-session","backend":"qemu","board_config":{"processor":{"model":"cortex-m3","frequency":72000000},"memory":{"flash":{"base":134217728,"size":131072},"ram":{"base":536870912,"size":20480}}}}`), &in)
	s, err := h.Create(context.Background(), in)
	if err != nil || s.Machine != "netduino2" || s.RunnerID != "r1" || s.State != model.StateCreated {
		t.Fatalf("%+v %v", s, err)
	}
}

func TestCreateErrors(t *testing.T) {
	h, st, _ := setup(t)
	ctx := context.Background()
	_, err := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Processor: &model.Processor{Model: "cortex-m3"},
		Memory: &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 64 << 20}, RAM: model.Region{Base: 0x20000000, Size: 1}}}})
	e := httpapi.AsError(err)
	if e == nil || e.Status != 422 || e.Code != "no_matching_board" || e.Details == nil {
		t.Fatalf("no fit: %v", err)
	}
	if _, err := h.Create(ctx, CreateRequest{Name: "", BoardConfig: model.BoardConfig{Board: "netduino2"}}); status(err) != 400 {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := h.Create(ctx, CreateRequest{Name: "x", Backend: "renode", BoardConfig: model.BoardConfig{Board: "netduino2"}}); status(err) != 422 {
		t.Fatalf("renode: %v", err)
	}
	st.UnregisterRunner(ctx, "r1")
	if _, err := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "netduino2"}}); status(err) != 503 {
		t.Fatalf("no runner: %v", err)
	}
}

func TestLoadBinDefaultsToFlashBaseAndPrepares(t *testing.T) {
	h, st, f := setup(t)
	ctx := context.Background()
	s, _ := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	p := model.Program{ID: model.NewID(), Format: model.FormatBIN, Size: 1024, SHA256: strings.Repeat("a", 64), Segments: []model.Segment{{Addr: 0, Size: 1024}}}
	st.PutProgram(ctx, p)
	if _, err := h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: p.ID}); err != nil {
		t.Fatal(err)
	}
	if f.last() != "POST /sessions/"+s.ID+"/prepare" || f.bodies[0].Program.LoadAddress != 0x08000000 {
		t.Fatalf("prepare: %v %+v", f.calls, f.bodies)
	}
	// Power on goes to the runner, which records the running state.
	s, err := h.PowerOn(ctx, s.ID, false)
	if err != nil || s.State != model.StateRunning || f.last() != "POST /sessions/"+s.ID+"/start" {
		t.Fatalf("poweron: %+v %v %v", s, err, f.calls)
	}
	if _, err := h.PowerOn(ctx, s.ID, false); status(err) != 409 {
		t.Fatalf("double poweron: %v", err)
	}
	// A runner's 4xx passes through unchanged; its 5xx stays internal.
	f.status = 429
	if _, err := h.Reset(ctx, s.ID); status(err) != 429 {
		t.Fatalf("runner 429: %v", err)
	}
	f.status = 500
	if _, err := h.Reset(ctx, s.ID); err == nil || status(err) != 0 {
		t.Fatalf("runner 500: %v", err)
	}
}

func TestPowerOnMovesOffADeadRunner(t *testing.T) {
	h, st, f := setup(t)
	ctx := context.Background()
	s, _ := h.Create(ctx, CreateRequest{Name: "x", BoardConfig: model.BoardConfig{Board: "mps2-an385"}})
	p := model.Program{ID: model.NewID(), Format: model.FormatELF, SHA256: strings.Repeat("b", 64), Segments: []model.Segment{{Addr: 0, Size: 64}}}
	st.PutProgram(ctx, p)
	h.LoadProgram(ctx, s.ID, LoadRequest{ProgramID: p.ID})
	r1, _ := st.Runner(ctx, "r1")
	st.UnregisterRunner(ctx, "r1")
	r1.ID = "r2"
	st.RegisterRunner(ctx, r1, time.Minute)
	s, err := h.PowerOn(ctx, s.ID, false)
	if err != nil || s.RunnerID != "r2" || !strings.HasSuffix(f.last(), "/start") {
		t.Fatalf("%+v %v", s, err)
	}
}

// The CloudEvents receiver over HTTP, with sdk-go as the client.
func TestEventsOverHTTP(t *testing.T) {
	h, _, _ := setup(t)
	ctx := context.Background()
	eh, err := h.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(eh)
	defer srv.Close()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("/test")
	e.SetType(events.TypeSessionCreate)
	e.SetData(cloudevents.ApplicationJSON, events.CreateSession{Name: "ce", BoardConfig: model.BoardConfig{Board: "netduino2"}})
	reply, res := c.Request(cloudevents.ContextWithTarget(ctx, srv.URL), e)
	if cloudevents.IsUndelivered(res) || reply == nil || reply.Type() != events.TypeSessionCreated {
		t.Fatalf("reply %v, result %v", reply, res)
	}
	var s model.Session
	if err := reply.DataAs(&s); err != nil || s.Machine != "netduino2" || reply.Subject() != s.ID {
		t.Fatalf("reply data %+v %v", s, err)
	}
	e.SetData(cloudevents.ApplicationJSON, map[string]any{"name": "ce", "board_config": map[string]any{"board": "nope"}})
	_, res = c.Request(cloudevents.ContextWithTarget(ctx, srv.URL), e)
	var hr *cehttp.Result
	if !errors.As(res, &hr) || hr.StatusCode != 422 {
		t.Fatalf("bad board result: %v", res)
	}
}
