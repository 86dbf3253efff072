package qemu

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// BenchmarkClock runs the CPU-bound covbench.elf (about 1.2 G guest
// instructions, ~1 s) on mps2-an385 to its semihosting exit on each clock
// Launch offers, started paused as the runner starts it and timed from
// cont to exit; each iteration runs every clock, rotating their order so
// machine noise spreads evenly. It reports the median wall time of each
// and its ratio to the host clock (plain).
func BenchmarkClock(b *testing.B) {
	elf := testFirmware(b, "mps2-an385", "covbench.elf")
	clocks := []struct {
		name  string
		clock Clock
	}{
		{"plain", Clock{}},
		{"deterministic", Clock{Deterministic: true}},
	}
	times := make([][]time.Duration, len(clocks))
	i := 0
	for b.Loop() {
		for k := range clocks {
			v := (i + k) % len(clocks)
			times[v] = append(times[v], runToExit(b, elf, clocks[v].clock))
		}
		i++
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Sorted(slices.Values(d))
		return s[len(s)/2]
	}
	plain := median(times[0])
	b.ReportMetric(float64(plain.Milliseconds()), "plain-ms")
	for v := 1; v < len(clocks); v++ {
		m := median(times[v])
		b.ReportMetric(float64(m.Milliseconds()), clocks[v].name+"-ms")
		b.ReportMetric(float64(m)/float64(plain), clocks[v].name+"-x")
	}
}

// runToExit starts elf paused on clock and times it from cont to its exit.
func runToExit(b *testing.B, elf string, clock Clock) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := Start(ctx, Config{Binary: "qemu-system-arm", Machine: "mps2-an385", Dir: sockDir(b), Clock: clock,
		Firmware: Firmware{Path: elf, Format: model.FormatELF}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Kill()
	t0 := time.Now()
	if _, err := p.QMP.Execute(ctx, "cont", nil); err != nil {
		b.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		b.Fatalf("covbench did not exit: %v", ctx.Err())
	}
	d := time.Since(t0)
	if p.ExitCode() != 0 {
		b.Fatalf("covbench: %s: %s", p.ExitReason(), p.Output())
	}
	return d
}
