package qemu

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
)

// Each clock is its -icount option: none for the host clock, sleep off
// for deterministic runs, align for virtual time; a recording keeps its
// own settings and Deterministic wins over VirtualTime.
func TestClockArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Clock
		want []string
	}{
		{"host", Clock{}, nil},
		{"deterministic", Clock{Deterministic: true}, []string{"-icount", "shift=4,sleep=off"}},
		{"virtual", Clock{VirtualTime: true}, []string{"-icount", "shift=4,align=on"}},
		{"both", Clock{Deterministic: true, VirtualTime: true}, []string{"-icount", "shift=4,sleep=off"}},
		{"record", Clock{VirtualTime: true, Record: "/r"}, []string{"-icount", "shift=4,rr=record,rrfile=/r/replay.bin"}},
	} {
		if got := tc.c.args(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// "info jit" says how far the guest clock is behind only on the
// instruction counter; without that line the guest clock is unknown.
func TestParseLag(t *testing.T) {
	const jit = "Translation buffer state:\ngen code size       33635/1073736704\n[TCG profiler not compiled]\nHost - Guest clock  62 ms\nMax guest delay     2 ms\nMax guest advance   0 ms\n"
	for in, want := range map[string]time.Duration{
		jit:                                62 * time.Millisecond,
		"Host - Guest clock  -3 ms\n":      -3 * time.Millisecond,
		"x\nHost - Guest clock  0 ms\nMax": 0,
	} {
		if got, err := parseLag(in); err != nil || got != want {
			t.Errorf("parseLag(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseLag("Translation buffer state:\n[TCG profiler not compiled]\n"); !errors.Is(err, emulator.ErrUnsupported) {
		t.Errorf("host clock: %v, want ErrUnsupported", err)
	}
}
