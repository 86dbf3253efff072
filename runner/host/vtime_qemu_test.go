package host

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// timedLine is a console line with the host instant it reached the ring.
type timedLine struct {
	at   time.Time
	text string
}

// clockWatch follows a vclock.elf session's console: its lines, and its
// "t <guest_ms>" lines as guest time against host time.
type clockWatch struct {
	mu    sync.Mutex
	lines []timedLine
	ticks []timedLine // the "t" lines
	guest []float64   // their guest ms
}

func watchClock(tb testing.TB, g *rig, id string) *clockWatch {
	tb.Helper()
	s, err := g.r.slot(id, false)
	if err != nil {
		tb.Fatal(err)
	}
	w := &clockWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		var off int64
		var part []byte
		for s.ring.Wait(ctx, off) == nil {
			data, _, next := s.ring.Read(off, 0)
			at := time.Now()
			off = next
			part = append(part, data...)
			for {
				i := bytes.IndexByte(part, '\n')
				if i < 0 {
					break
				}
				w.add(timedLine{at, strings.TrimSpace(string(part[:i]))})
				part = part[i+1:]
			}
		}
	}()
	return w
}

func (w *clockWatch) add(l timedLine) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, l)
	if ms, ok := strings.CutPrefix(l.text, "t "); ok {
		if v, err := strconv.ParseFloat(ms, 64); err == nil {
			w.ticks = append(w.ticks, l)
			w.guest = append(w.guest, v)
		}
	}
}

// waitLine waits (bounded only against a hang) for a line starting with
// prefix that arrived after from, and returns it.
func (w *clockWatch) waitLine(tb testing.TB, prefix string, from time.Time) timedLine {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		for _, l := range w.lines {
			if l.at.After(from) && strings.HasPrefix(l.text, prefix) {
				w.mu.Unlock()
				return l
			}
		}
		w.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("no %q line on the console after %v", prefix, from)
	return timedLine{}
}

// guestAt is the guest's clock (ms) at host instant h, interpolated
// between the "t" lines around it; false outside them.
func (w *clockWatch) guestAt(h time.Time) (float64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := 1; i < len(w.ticks); i++ {
		a, b := w.ticks[i-1].at, w.ticks[i].at
		if !h.Before(a) && !h.After(b) {
			if !b.After(a) {
				return w.guest[i], true
			}
			f := float64(h.Sub(a)) / float64(b.Sub(a))
			return w.guest[i-1] + f*(w.guest[i]-w.guest[i-1]), true
		}
	}
	return 0, false
}

// maxDrift is the largest |guest clock of a - guest clock of b| at the
// same host instants, every 10 ms from from to to, with how many instants
// both clocks were known at.
func maxDrift(a, b *clockWatch, from, to time.Time) (drift float64, n int) {
	d := drifts(a, b, from, to)
	for _, v := range d {
		drift = max(drift, v)
	}
	return drift, len(d)
}

// drifts are the |guest clock of a - guest clock of b| maxDrift takes the
// largest of. A console line the host takes late (a loaded host) reads
// as drift too, up to its delay: a percentile shows the clocks' own.
func drifts(a, b *clockWatch, from, to time.Time) []float64 {
	var d []float64
	for h := from; h.Before(to); h = h.Add(10 * time.Millisecond) {
		ga, oka := a.guestAt(h)
		gb, okb := b.guestAt(h)
		if oka && okb {
			d = append(d, abs(ga-gb))
		}
	}
	return d
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// vclockPair starts two vclock.elf sessions, "busy" and "idle", halted,
// on the host clock or on virtual time, and resumes them together; it
// answers the host instant just before the resume.
func vclockPair(tb testing.TB, g *rig, virtual bool) (busy, idle *clockWatch, resumed time.Time) {
	tb.Helper()
	prog := g.qemuProgram(tb, "vclock.elf")
	var w []*clockWatch
	for _, id := range []string{"busy", "idle"} {
		if err := g.st.CreateSession(tb.Context(), model.Session{ID: id, State: model.StateStopped, CreatedAt: time.Now()}); err != nil {
			tb.Fatal(err)
		}
		req := runnerapi.StartRequest{Machine: "mps2-an385", Program: prog, Halted: true, VirtualTime: virtual}
		if _, err := g.r.Start(tb.Context(), id, req); err != nil {
			tb.Fatalf("start %s: %v", id, err)
		}
		w = append(w, watchClock(tb, g, id))
	}
	resumed = time.Now()
	for _, id := range []string{"busy", "idle"} {
		if err := g.r.Resume(tb.Context(), id); err != nil {
			tb.Fatal(err)
		}
	}
	return w[0], w[1], resumed
}

// guestMs parses the number at the end of a console line.
func guestMs(tb testing.TB, l timedLine) float64 {
	tb.Helper()
	f := strings.Fields(l.text)
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		tb.Fatalf("line %q: %v", l.text, err)
	}
	return v
}

// busyIterations is the test's CPU-bound load: 20 million iterations of
// vclock.elf's loop, each at least 4 instructions, so at least
// minBusyGuestMs of guest time on the instruction counter (16 ns an
// instruction); about 120 ms on the host clock of a 2020s host.
const (
	busyIterations = 20
	minBusyGuestMs = busyIterations * 4 * (1 << qemu.ICountShift)
)

// Two real mps2-an385 machines on virtual time, resumed together, one
// kept busy and the other idle, with the runner's barrier between them:
// both run on the instruction counter (the busy loop takes the guest
// time its instructions make, far more than it would on the host clock,
// and QEMU answers each guest's lag), the busy guest is not let run ahead
// of the host, and the two guest clocks stay together.
func TestVirtualTimeRealQEMU(t *testing.T) {
	g := newRigOn(t, qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}}), nil)
	busy, idle, resumed := vclockPair(t, g, true)
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		st  VirtualTimeStats
		err error
	}
	synced := make(chan result, 1)
	go func() {
		st, err := g.r.SyncVirtualTime(ctx, []string{"busy", "idle"}, 0)
		synced <- result{st, err}
	}()
	busy.waitLine(t, "vclock mps2-an385 ready", resumed)
	sent := time.Now()
	if err := g.r.Input("busy", "", []byte("busy "+strconv.Itoa(busyIterations)+"\r")); err != nil {
		t.Fatal(err)
	}
	done := busy.waitLine(t, "busy done", sent)
	host := done.at.Sub(sent)
	cancel()
	res := <-synced
	if res.err != nil {
		t.Fatalf("barrier: %v", res.err)
	}
	guest := guestMs(t, done)
	if guest < minBusyGuestMs {
		t.Errorf("busy %d took %.0f guest ms: not on the instruction counter (at least %d there)", busyIterations, guest, minBusyGuestMs)
	}
	if guest > float64(host.Milliseconds())+1000 {
		t.Errorf("busy guest ran %.0f ms in %v of host time: ahead of the host", guest, host)
	}
	for _, id := range []string{"busy", "idle"} {
		n, err := g.r.virtualNode(id)
		if err == nil {
			_, err = n.c.VirtualLag(t.Context())
		}
		if err != nil {
			t.Errorf("%s: not on the instruction counter: %v", id, err)
		}
	}
	drift, n := maxDrift(busy, idle, sent, done.at)
	if n < int(host/(20*time.Millisecond)) {
		t.Fatalf("only %d instants with both clocks known in %v", n, host)
	}
	if drift > 1000 {
		t.Errorf("the guest clocks drifted %.0f ms apart", drift)
	}
	next := idle.waitLine(t, "t ", done.at)
	if last := guestMs(t, next); last < guest-1000 || last > float64(next.at.Sub(resumed).Milliseconds())+1000 {
		t.Errorf("the idle guest's clock read %.0f ms %v after the resume, the busy one having run %.0f ms of busy loop", last, next.at.Sub(resumed), guest)
	}
	if res.st.Polls == 0 || res.st.MaxSpread > time.Second {
		t.Errorf("barrier stats %+v", res.st)
	}
	// The barrier held nobody once it ended: both clocks still move.
	now := time.Now()
	busy.waitLine(t, "t ", now)
	idle.waitLine(t, "t ", now)
	t.Logf("busy %d: %.0f guest ms in %v; drift %.1f ms over %d instants; barrier %+v", busyIterations, guest, host, drift, n, res.st)
}
