package host

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/qemu"
)

// vtimeRun is what one clock mode measured.
type vtimeRun struct {
	// drift is the largest distance between the two guest clocks at the
	// same host instant over driftWindow with one node busy, from their
	// consoles; spread the barrier's own largest reading (0 without it).
	drift, p95, spread float64
	// busyHost is the host time busyIterations of guest loop took.
	busyHost time.Duration
	held     time.Duration
}

const driftWindow = 3 * time.Second

// measureVirtualTime runs two vclock.elf nodes in one mode: the busy one
// given a loop of load million iterations (enough to last driftWindow),
// then busyIterations timed on their own.
func measureVirtualTime(b *testing.B, virtual, barrier bool, load int) vtimeRun {
	// The console ring the benchmark has always run with (1 MiB).
	g := newRigOn(b, qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}}), func(s *Settings) { s.ConsoleBytes = 1 << 20 })
	busy, idle, resumed := vclockPair(b, g, virtual)
	var res vtimeRun
	ctx, cancel := context.WithCancel(b.Context())
	synced := make(chan VirtualTimeStats, 1)
	if barrier {
		go func() {
			st, err := g.r.SyncVirtualTime(ctx, []string{"busy", "idle"}, 0)
			if err != nil {
				b.Error(err)
			}
			synced <- st
		}()
	} else {
		synced <- VirtualTimeStats{}
	}
	busy.waitLine(b, "vclock mps2-an385 ready", resumed)
	sent := time.Now()
	if err := g.r.Input("busy", "", []byte("busy "+strconv.Itoa(load)+"\r")); err != nil {
		b.Fatal(err)
	}
	time.Sleep(driftWindow + 200*time.Millisecond)
	d := drifts(busy, idle, sent, sent.Add(driftWindow))
	if len(d) == 0 {
		b.Fatal("no instant with both clocks known")
	}
	slices.Sort(d)
	res.drift, res.p95 = d[len(d)-1], d[len(d)*95/100]
	busy.waitLine(b, "busy done", sent)
	start := time.Now()
	if err := g.r.Input("busy", "", []byte("busy "+strconv.Itoa(busyIterations)+"\r")); err != nil {
		b.Fatal(err)
	}
	done := busy.waitLine(b, "busy done", start)
	res.busyHost = done.at.Sub(start)
	cancel()
	st := <-synced
	res.spread, res.held = float64(st.MaxSpread)/float64(time.Millisecond), st.Held
	for _, id := range []string{"busy", "idle"} {
		if err := g.r.Stop(id); err != nil {
			b.Error(err)
		}
	}
	return res
}

// BenchmarkVirtualTime measures what virtual time buys and costs, two
// mps2-an385 nodes resumed together, one busy and one idle: the drift
// between their guest clocks (ms, the largest and the 95th percentile
// over 3 s with node 1 busy, sampled every 10 ms from console lines)
// on the host clock, on virtual time with QEMU's align alone, and with
// the runner's barrier too (and the barrier's own reading); and the
// slowdown of a CPU-bound guest loop on virtual time against the host
// clock (host time ratio), with the host time the barrier held nodes.
func BenchmarkVirtualTime(b *testing.B) {
	var real, align, synced vtimeRun
	for range b.N {
		// Loads sized to outlast the drift window in each mode.
		real = measureVirtualTime(b, false, false, 800)
		align = measureVirtualTime(b, true, false, 25)
		synced = measureVirtualTime(b, true, true, 25)
	}
	b.ReportMetric(real.drift, "drift_ms_realtime")
	b.ReportMetric(align.drift, "drift_ms_virtual_align")
	b.ReportMetric(synced.drift, "drift_ms_virtual_barrier")
	b.ReportMetric(real.p95, "drift_p95_ms_realtime")
	b.ReportMetric(align.p95, "drift_p95_ms_virtual_align")
	b.ReportMetric(synced.p95, "drift_p95_ms_virtual_barrier")
	b.ReportMetric(synced.spread, "spread_ms_barrier")
	b.ReportMetric(float64(synced.held)/float64(time.Millisecond), "held_ms_barrier")
	b.ReportMetric(float64(real.busyHost)/float64(time.Millisecond), "busy_host_ms_realtime")
	b.ReportMetric(float64(synced.busyHost)/float64(time.Millisecond), "busy_host_ms_virtual")
	b.ReportMetric(float64(synced.busyHost)/float64(real.busyHost), "slowdown_x")
	b.ReportMetric(0, "ns/op")
}
