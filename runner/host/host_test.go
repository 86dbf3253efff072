package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// published counts the runner's events by type.
type published struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *published) Publish(_ context.Context, typ, _ string, _ any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n[typ]++
	return nil
}

func (p *published) count(typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[typ]
}

// rig is a runner on the fake backend, with real (embedded) Redis state
// and a filesystem blob store.
type rig struct {
	r     *Runner
	fake  *emulatortest.Fake // nil on another backend
	blobs blob.Store
	st    *state.Store
	pub   *published
	prog  runnerapi.Program
}

func knownBoard(t *testing.T, name string) board.Board {
	t.Helper()
	i := slices.IndexFunc(board.Known, func(b board.Board) bool { return b.Name == name })
	if i < 0 {
		t.Fatalf("board %s not in the catalog", name)
	}
	return board.Known[i]
}

func newRig(t *testing.T, set func(*Settings)) *rig {
	t.Helper()
	netduino := knownBoard(t, "netduino2")
	netduino.Snapshots = true
	fake := emulatortest.NewFake(netduino, knownBoard(t, "lm3s6965evb"), knownBoard(t, "arduino-uno"))
	g := newRigOn(t, fake, set)
	g.fake = fake
	return g
}

// newRigOn is a runner on backend with embedded state and a blob store in
// a temporary directory.
func newRigOn(t testing.TB, backend emulator.Backend, set func(*Settings)) *rig {
	t.Helper()
	ctx := t.Context()
	st, err := state.OpenEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	image := []byte("not really an image: the fake does not read it")
	sum := sha256.Sum256(image)
	prog := runnerapi.Program{ID: "p1", BlobKey: "programs/p1", SHA256: hex.EncodeToString(sum[:]), Format: model.FormatBIN}
	if err := blobs.Put(ctx, prog.BlobKey, bytes.NewReader(image), int64(len(image)), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: the sockets live under /tmp.
	sockets, err := os.MkdirTemp("", "mshost")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockets) })
	s := Settings{SocketDir: sockets, Capacity: 8, ConsoleBytes: 1 << 16, StopGrace: time.Second, GDBListen: "127.0.0.1", Heartbeat: time.Minute}
	if set != nil {
		set(&s)
	}
	pub := &published{n: map[string]int{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := New(ctx, Config{Settings: s, ID: "r1", URL: "http://runner", Dir: t.TempDir(), Backend: backend}, st, blobs, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	return &rig{r: r, st: st, pub: pub, prog: prog, blobs: blobs}
}

// session stores a session for the runner to record states in.
func (g *rig) session(t *testing.T, id string) {
	t.Helper()
	if err := g.st.CreateSession(t.Context(), model.Session{ID: id, State: model.StateStopped, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func (g *rig) start(t *testing.T, id, machine string) runnerapi.Status {
	t.Helper()
	st, err := g.r.Start(t.Context(), id, runnerapi.StartRequest{Machine: machine, Program: g.prog})
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return st
}

// waitState waits (bounded only against a hang) until the stored session
// is in want.
func (g *rig) waitState(t *testing.T, id string, want model.State) model.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		s, err := g.st.GetSession(ctx, id)
		if err == nil && s.State == want {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("session %s: %+v (err %v), want state %s", id, s, err, want)
		case <-time.After(time.Millisecond):
		}
	}
}

// waitOutput waits until the port's history (from offset 0) contains want.
func (g *rig) waitOutput(t *testing.T, id, port, want string) {
	t.Helper()
	s, err := g.r.slot(id, false)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := s.ports.lookup(id, port)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		data, _, next := ring.Read(0, 0)
		if strings.Contains(string(data), want) {
			return
		}
		if err := ring.Wait(ctx, next); err != nil {
			t.Fatalf("%s of %s: %q, want %q: %v", port, id, data, want, err)
		}
	}
}

// last is the machine launched last.
func (g *rig) last(t *testing.T) *emulatortest.Machine {
	t.Helper()
	ms := g.fake.Machines()
	if len(ms) == 0 {
		t.Fatal("no machine launched")
	}
	return ms[len(ms)-1]
}

// A board whose core cannot reset in place (AVR on QEMU 7.2) is reset by
// launching it afresh: a new machine boots, the console history carries
// on, and the session is running again when Reset returns.
func TestResetByRestart(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "avr")
	g.start(t, "avr", "arduino-uno")
	g.waitOutput(t, "avr", "", "MS-TEST-FW arduino-uno ready")
	first := g.last(t)
	if err := g.r.Reset(t.Context(), "avr"); err != nil {
		t.Fatal(err)
	}
	if g.last(t) == first {
		t.Fatal("reset did not launch the board afresh")
	}
	select {
	case <-first.Done():
	default:
		t.Fatal("the machine before the reset is still there")
	}
	g.waitOutput(t, "avr", "", "MS-TEST-FW arduino-uno ready\r\nMS-TEST-FW arduino-uno ready")
	if s := g.waitState(t, "avr", model.StateRunning); s.Reason != "" {
		t.Fatalf("after the reset: %+v", s)
	}
}

func TestStartResetStopDelete(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	st := g.start(t, "s1", "netduino2")
	if !st.Running || st.GDB == "" {
		t.Fatalf("start: %+v", st)
	}
	g.waitState(t, "s1", model.StateRunning)
	g.waitOutput(t, "s1", "", "MS-TEST-FW netduino2 ready")
	if err := g.r.Input("s1", "", []byte("count\r")); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "s1", "uart0", "count=1")

	// A second power on without restart is refused; a reset boots again.
	if _, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog}); !isStatus(err, http.StatusConflict) {
		t.Fatalf("second start: %v", err)
	}
	if err := g.r.Reset(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	m := g.last(t)
	if err := g.r.Input("s1", "", []byte("count\r")); err != nil {
		t.Fatal(err)
	}
	// The line count starts over after the reset.
	g.waitOutput(t, "s1", "", "count=1\r\nMS-TEST-FW netduino2 ready\r\ncount\rcount=1")

	// A stop answers once the stop is recorded.
	if err := g.r.Stop("s1"); err != nil {
		t.Fatal(err)
	}
	s, err := g.st.GetSession(t.Context(), "s1")
	if err != nil || s.State != model.StateStopped || s.Reason != "" || s.EmulatorLog != nil {
		t.Fatalf("after stop: %+v %v", s, err)
	}
	if e := m.Exit(); e.Kind != emulator.ExitStopped {
		t.Fatalf("machine after stop: %+v", e)
	}
	if g.r.running() != 0 {
		t.Fatalf("%d running after stop", g.r.running())
	}
	if err := g.r.Reset(t.Context(), "s1"); !isStatus(err, http.StatusConflict) {
		t.Fatalf("reset of a stopped session: %v", err)
	}

	// Power on again, then delete: the machine goes with the slot.
	g.start(t, "s1", "netduino2")
	m = g.last(t)
	if err := g.r.Delete("s1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("machine still running after delete")
	}
	if _, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog}); !isStatus(err, http.StatusNotFound) {
		t.Fatalf("start after delete: %v", err)
	}
	if n := g.pub.count(events.TypeSessionStopped); n != 2 {
		t.Fatalf("%d stopped events, want 2", n)
	}
}

func isStatus(err error, code int) bool {
	var e *httpapi.Error
	return errors.As(err, &e) && e.Status == code
}

// How a machine ends decides the session's state from the typed exit.
func TestExitBecomesState(t *testing.T) {
	g := newRig(t, nil)
	crash := emulator.Exit{Kind: emulator.ExitCrash, Signal: "SIGABRT", Reason: "emulator killed by signal aborted: qemu: fatal: Lockup", Log: []string{"qemu: fatal: Lockup", "R15=00000000"}}
	for _, c := range []struct {
		name   string
		end    func(m *emulatortest.Machine)
		state  model.State
		reason string
		log    []string
		exit   model.Exit
	}{
		{"crash", func(m *emulatortest.Machine) { m.End(crash) }, model.StateError, crash.Reason, crash.Log, model.Exit{Kind: "crash", Signal: "SIGABRT"}},
		{"signal", func(m *emulatortest.Machine) { m.End(emulator.Exit{Kind: emulator.ExitSignal, Signal: "SIGKILL"}) }, model.StateError, "emulator killed by signal SIGKILL", nil, model.Exit{Kind: "signal", Signal: "SIGKILL"}},
		{"exit 3", func(*emulatortest.Machine) { g.r.Input("exit3", "", []byte("exit 3\r")) }, model.StateError, "firmware exited with status 3", nil, model.Exit{Kind: "status", Code: 3}},
		{"exit 0", func(*emulatortest.Machine) { g.r.Input("exit0", "", []byte("exit 0\r")) }, model.StateStopped, "firmware exited with status 0", nil, model.Exit{Kind: "status"}},
	} {
		id := strings.ReplaceAll(c.name, " ", "")
		g.session(t, id)
		g.start(t, id, "netduino2")
		g.waitOutput(t, id, "", "ready")
		c.end(g.last(t))
		s := g.waitState(t, id, c.state)
		if s.Reason != c.reason || !slices.Equal(s.EmulatorLog, c.log) {
			t.Errorf("%s: reason %q log %q, want %q %q", c.name, s.Reason, s.EmulatorLog, c.reason, c.log)
		}
		if s.Exit == nil || *s.Exit != c.exit {
			t.Errorf("%s: exit %+v, want %+v", c.name, s.Exit, c.exit)
		}
		// The slot lets go of the ended machine: the session powers on
		// again.
		if st := g.start(t, id, "netduino2"); !st.Running {
			t.Errorf("%s: power on after the end: %+v", c.name, st)
		}
		if err := g.r.Stop(id); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.pub.count(events.TypeSessionFailed); n != 3 {
		t.Fatalf("%d failed events, want 3", n)
	}
}

// A reset that finds the machine gone waits until its end is recorded and
// answers with the session out of its slot (as a guest that crashes the
// emulator during a reset or power on is answered with its error).
func TestResetOfEndedMachine(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	st, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Halted: true})
	if err != nil || !st.Running {
		t.Fatalf("halted start: %+v %v", st, err)
	}
	g.last(t).End(emulator.Exit{Kind: emulator.ExitCrash, Reason: "boom"})
	// Whether watch or the reset takes the machine out of the slot first,
	// the reset answers once the end is recorded: nil, or 409 when watch
	// was first.
	if err := g.r.Reset(t.Context(), "s1"); err != nil && !isStatus(err, http.StatusConflict) {
		t.Fatalf("reset of a machine that ended: %v", err)
	}
	s, err := g.st.GetSession(t.Context(), "s1")
	if err != nil || s.State != model.StateError || s.Reason != "boom" {
		t.Fatalf("reason %q", s.Reason)
	}
	sl, _ := g.r.slot("s1", false)
	sl.mu.Lock()
	st = g.r.status(sl)
	sl.mu.Unlock()
	if st.Running {
		t.Fatalf("status after the recorded end: %+v", st)
	}
}

// Every UART of the board has its own history and input, by port name;
// an unknown port is refused naming those the board has.
func TestPorts(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	g.start(t, "s1", "lm3s6965evb")
	srv := httptest.NewServer(g.r.Handler())
	defer srv.Close()
	base := srv.URL + runnerapi.Prefix + "/sessions/s1/console"
	post := func(q, body string) (int, string) {
		resp, err := http.Post(base+q, "application/octet-stream", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(q string) (int, string) {
		resp, err := http.Get(base + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("?port=uart2", "to uart2"); code != 200 {
		t.Fatalf("input on uart2: %d %s", code, body)
	}
	g.waitOutput(t, "s1", "uart2", "to uart2")
	g.waitOutput(t, "s1", "", "ready")
	if code, body := get("?port=uart2"); code != 200 || body != "to uart2" {
		t.Fatalf("uart2: %d %q", code, body)
	}
	if code, body := get("?port=uart1"); code != 200 || body != "" {
		t.Fatalf("uart1: %d %q", code, body)
	}
	if code, body := get(""); code != 200 || strings.Contains(body, "to uart2") || !strings.Contains(body, "ready") {
		t.Fatalf("uart0: %d %q", code, body)
	}
	for _, q := range []string{"?port=uart3", "?port=usart1"} {
		for _, do := range []func(string) (int, string){get, func(q string) (int, string) { return post(q, "x") }} {
			code, body := do(q)
			if code != 400 || !strings.Contains(body, "uart0 (uart0), uart1 (uart1), uart2 (uart2)") {
				t.Fatalf("%s: %d %s", q, code, body)
			}
		}
	}
}

// Spares stay within the budget, the least recently used session's going
// first, and a power on takes its spare instead of launching.
func TestSpares(t *testing.T) {
	g := newRig(t, func(s *Settings) { s.Prelaunch, s.Spares = true, 2 })
	spares := func(id string) int {
		s, err := g.r.slot(id, false)
		if err != nil {
			return 0
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, sp := range []*spare{&s.cold, &s.incoming} {
			if sp.m != nil {
				n++
			}
		}
		return n
	}
	// waitSpares waits until the sessions hold the spares want says.
	waitSpares := func(want map[string]int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			got := map[string]int{}
			for id := range want {
				got[id] = spares(id)
			}
			if fmt.Sprint(got) == fmt.Sprint(want) && int(g.r.spares.Load()) == sum(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("spares %v (%d counted), want %v", got, g.r.spares.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	req := runnerapi.StartRequest{Machine: "netduino2", Program: g.prog}
	for _, id := range []string{"a", "b", "c"} {
		g.session(t, id)
	}
	if err := g.r.Prepare("a", req); err != nil {
		t.Fatal(err)
	}
	waitSpares(map[string]int{"a": 1})
	if err := g.r.Prepare("b", req); err != nil {
		t.Fatal(err)
	}
	waitSpares(map[string]int{"a": 1, "b": 1})
	// c needs room: a, used least recently, gives its spare.
	if err := g.r.Prepare("c", req); err != nil {
		t.Fatal(err)
	}
	waitSpares(map[string]int{"a": 0, "b": 1, "c": 1})

	// Power on takes b's spare.
	launched := len(g.fake.Machines())
	g.start(t, "b", "netduino2")
	if n := len(g.fake.Machines()); n != launched {
		t.Fatalf("power on launched %d machines instead of taking the spare", n-launched)
	}
	waitSpares(map[string]int{"a": 0, "b": 0, "c": 1})
	// Once b stops, it has a spare again.
	if err := g.r.Stop("b"); err != nil {
		t.Fatal(err)
	}
	waitSpares(map[string]int{"a": 0, "b": 1, "c": 1})
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Power on, power off and delete racing on the same sessions leave no
// machine behind and the counters at zero (run with -race).
func TestConcurrentStartStopDelete(t *testing.T) {
	g := newRig(t, func(s *Settings) { s.Prelaunch, s.Spares = true, 4 })
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		g.session(t, id)
	}
	var wg sync.WaitGroup
	for i := range 24 {
		id := ids[i%len(ids)]
		wg.Go(func() {
			switch i % 4 {
			case 0:
				g.r.Start(context.Background(), id, runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Restart: i%8 == 0})
			case 1:
				g.r.Stop(id)
			case 2:
				g.r.Prepare(id, runnerapi.StartRequest{Machine: "netduino2", Program: g.prog})
			case 3:
				g.r.Reset(context.Background(), id)
			}
		})
	}
	wg.Wait()
	var dels sync.WaitGroup
	for _, id := range ids {
		dels.Go(func() { g.r.Delete(id) })
		dels.Go(func() {
			g.r.Start(context.Background(), id, runnerapi.StartRequest{Machine: "netduino2", Program: g.prog})
		})
	}
	dels.Wait()
	for _, id := range ids {
		g.r.Delete(id)
	}
	// A prepare still in flight when its session went launches nothing
	// for it; every machine ever launched ends.
	for _, m := range g.fake.Machines() {
		select {
		case <-m.Done():
		case <-time.After(time.Minute):
			t.Fatalf("machine %s still running after every session was deleted", m.Dir())
		}
	}
	if a, s := g.r.running(), g.r.spares.Load(); a != 0 || s != 0 {
		t.Fatalf("%d running, %d spares after every session was deleted", a, s)
	}
}

// A snapshot saves the running machine's state with the console offset;
// a restore replaces the machine with one that continues from it, without
// booting again, and the replaced machine's end records nothing.
func TestSnapshotRestore(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	g.start(t, "s1", "netduino2")
	g.waitOutput(t, "s1", "", "ready\r\n")
	g.r.Input("s1", "", []byte("count\r"))
	g.waitOutput(t, "s1", "", "count=1\r\n")
	res, err := g.r.Snapshot(t.Context(), "s1", runnerapi.SnapshotRequest{SnapshotID: "snap1", BlobKey: "snapshots/snap1", Machine: "netduino2"})
	if err != nil {
		t.Fatal(err)
	}
	want := int64(len("MS-TEST-FW netduino2 ready\r\ncount\rcount=1\r\n"))
	if res.ConsoleOffset != want || res.EmulatorVersion != "1" || res.Size == 0 {
		t.Fatalf("snapshot: %+v, want console offset %d", res, want)
	}
	g.r.Input("s1", "", []byte("count\r"))
	g.waitOutput(t, "s1", "", "count=2\r\n")
	old := g.last(t)

	if _, err := g.r.Restore(t.Context(), "s1", runnerapi.RestoreRequest{Machine: "netduino2", Program: g.prog, SnapshotID: "snap1",
		BlobKey: "snapshots/snap1", SHA256: res.SHA256, EmulatorVersion: "2"}); !isStatus(err, http.StatusUnprocessableEntity) {
		t.Fatalf("restore of another version's state: %v", err)
	}
	st, err := g.r.Restore(t.Context(), "s1", runnerapi.RestoreRequest{Machine: "netduino2", Program: g.prog, SnapshotID: "snap1",
		BlobKey: "snapshots/snap1", SHA256: res.SHA256, EmulatorVersion: res.EmulatorVersion, Deterministic: true})
	if err != nil || !st.Running {
		t.Fatalf("restore: %+v %v", st, err)
	}
	if n := g.r.running(); n != 1 {
		t.Fatalf("%d emulators counted running after a restore, want 1", n)
	}
	// A deterministic session stays one across a restore.
	if !g.last(t).Spec().Deterministic {
		t.Fatal("the restored machine does not run on the instruction counter")
	}
	if e := old.Exit(); e.Kind != emulator.ExitStopped {
		t.Fatalf("replaced machine: %+v", e)
	}
	g.r.Input("s1", "", []byte("count\r"))
	g.waitOutput(t, "s1", "", "count=2\r\ncount\rcount=2\r\n")
	if n := g.pub.count(events.TypeSessionStopped); n != 0 {
		t.Fatalf("the replaced machine's end was recorded: %d stopped events", n)
	}
	if _, err := g.r.Snapshot(t.Context(), "s1", runnerapi.SnapshotRequest{SnapshotID: "snap2", BlobKey: "snapshots/snap2", Machine: "lm3s6965evb"}); !isStatus(err, http.StatusUnprocessableEntity) {
		t.Fatalf("snapshot of a board without snapshots: %v", err)
	}
}

// The registration's running count follows a start and a stop at once,
// not at the next heartbeat: placement of a system's nodes reads it.
func TestRegistrationFollowsLoad(t *testing.T) {
	g := newRig(t, func(s *Settings) { s.Heartbeat = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	running := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := g.st.Runner(t.Context(), g.r.cfg.ID)
			if err == nil && r.Running == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("registration says %d running (%v), want %d", r.Running, err, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	g.session(t, "s1")
	g.start(t, "s1", "netduino2")
	running(1)
	if err := g.r.Stop("s1"); err != nil {
		t.Fatal(err)
	}
	running(0)
}
